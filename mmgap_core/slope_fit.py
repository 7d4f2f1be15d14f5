"""What the two background-scale estimators share: per-key sums of log slopes, merged exactly.

:class:`~mmgap_core.background.BackgroundScale` (keys: query modality, candidate modality) and
:class:`~mmgap_core.centered_background.CenteredBackgroundScale` (keys add a pool size) both fit
each key's scale as the geometric mean of per-list slopes. This base holds their fitted state, the
``fit`` that replaces a query modality's keys, ``partial_fit`` with its input checks, the one-pass
plans of ``transform_stacked``, ``transform_full``, and the parts of ``from_dict`` they have in
common.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from ._validation import positive_int

__all__ = ["LogSlopeFit", "split_stacked"]


def split_stacked(z: np.ndarray, keys: list[str]) -> dict[str, np.ndarray]:
    """Key -> its ``[Q, k]`` rows of ``z``, which stacks them key after key (views, no copy)."""
    n_q = z.shape[0] // len(keys)
    return {m: z[i * n_q : (i + 1) * n_q] for i, m in enumerate(keys)}


class LogSlopeFit:
    """Fitted state of a per-key geometric-mean-of-slopes estimator (scikit-learn style).

    Parameters
    ----------
    model_id, dim : str or None, int or None
        The embedding model and dimension the scales are fitted for.

    Attributes
    ----------
    count_ : dict
        Key -> number of lists fitted.
    log_scale_sum_ : dict
        Key -> sum of their log slopes (so :meth:`partial_fit` merges exactly).
    corpus_sizes_ : dict
        Candidate modality -> corpus size at the last fit.
    query_modalities_ : set of str
        Query modalities fitted.
    """

    def __init__(self, model_id: str | None = None, dim: int | None = None):
        self.model_id = model_id
        self.dim = dim
        self.count_: dict[tuple, int] = {}
        self.log_scale_sum_: dict[tuple, float] = {}
        self.corpus_sizes_: dict[str, int] = {}
        self.query_modalities_: set[str] = set()

    @property
    def is_fitted(self) -> bool:
        """Whether lists of any query modality were fitted."""
        return bool(self.query_modalities_)

    def has_query_modality(self, query_modality: str) -> bool:
        """Whether lists of ``query_modality`` queries were fitted."""
        return query_modality in self.query_modalities_

    def fit(self, lists: Mapping[str, np.ndarray], query_modality: str, corpus_sizes):
        """Fit the keys of ``query_modality`` (replacing them); see :meth:`partial_fit`.

        Bad input raises and leaves the old keys in place.
        """
        old = {
            k: (self.count_.pop(k), self.log_scale_sum_.pop(k))
            for k in list(self.count_)
            if k[0] == query_modality
        }
        had = query_modality in self.query_modalities_
        self.query_modalities_.discard(query_modality)
        try:
            return self.partial_fit(lists, query_modality, corpus_sizes)
        except Exception:
            for k, (count, total) in old.items():
                self.count_[k], self.log_scale_sum_[k] = count, total
            if had:
                self.query_modalities_.add(query_modality)
            raise

    #: ``(what the lists are called, what their values are, their checker)`` for messages and
    #: :meth:`_checked_inputs`; set by each subclass.
    _INPUT: tuple[str, str, Callable[[object, str], np.ndarray]]

    def partial_fit(self, lists, query_modality: str, corpus_sizes):
        """Add more calibration lists to the running fit; the input is as for :meth:`fit`.

        Every list is checked before anything changes.
        """
        checked = self._checked_inputs(lists, query_modality, corpus_sizes, *self._INPUT)
        for m, (arr, n) in checked.items():
            self.corpus_sizes_[m] = n
            self.query_modalities_.add(query_modality)
            self._add_lists(query_modality, m, arr, n)
        return self

    def _add_lists(
        self, query_modality: str, candidate_modality: str, arr: np.ndarray, n: int
    ) -> None:  # pragma: no cover
        """Add the slopes of one key's checked lists (``n``: its corpus size)."""
        raise NotImplementedError

    def transform_stacked(self, lists, query_modality: str, n_items):  # pragma: no cover
        raise NotImplementedError

    def _plain_scale(
        self, candidate_modality: str, query_modality: str, k: int
    ) -> float | None:  # pragma: no cover
        """The key's fitted scale for lists of ``k``, ``None`` where it has none."""
        raise NotImplementedError

    def _one_pass_plan(self, keys, k: int, query_modality: str, n_items: Mapping[str, int]):
        """``(scales, corpus sizes)`` of ``keys`` for lists of ``k``, ``None`` if one is not plain.

        Not plain: a key with no fitted scale, or a corpus size that is not a positive int. The
        sizes are at least ``k`` (order scores of ranks beyond the corpus repeat the last one).
        """
        scales, ns = [], []
        for m in keys:
            n = n_items.get(m)
            n = self.corpus_sizes_.get(m) if n is None else n
            if type(n) is not int or n < 1:
                return None
            sigma = self._plain_scale(m, query_modality, k)
            if sigma is None:
                return None
            scales.append(sigma)
            ns.append(max(n, k))
        return tuple(scales), tuple(ns)

    def _stacked_plan(self, lists, query_modality: str, n_items, min_width: int = 0):
        """``((Q, k), (scales, corpus sizes))`` to stack full ``[Q, k]`` lists, or ``None``.

        ``None``: the arrays differ in shape, have no rows or fewer than ``min_width`` columns,
        or a key is not plain (:meth:`_one_pass_plan`).
        """
        arrs = list(lists.values())
        shape = arrs[0].shape if arrs else (0, 0)
        if not shape[0] or shape[1] < min_width or any(a.shape != shape for a in arrs):
            return None
        plan = self._one_pass_plan(lists, shape[1], query_modality, n_items)
        return None if plan is None else (shape, plan)

    def transform_full(
        self, lists: Mapping[str, np.ndarray], query_modality: str, n_items: Mapping[str, int]
    ) -> dict[str, np.ndarray] | None:
        """The subclass's ``transform`` of several full ``[Q, k]`` lists at once, bit for bit.

        A search's lists cost one set of numpy calls, not one per modality. ``None`` where that
        does not apply (see ``transform_stacked``): ``transform`` then handles each list, errors
        and warnings included.
        """
        z = self.transform_stacked(lists, query_modality, n_items)
        return None if z is None else split_stacked(z, list(lists))

    def _checked_inputs(
        self,
        lists,
        query_modality: str,
        corpus_sizes,
        arg: str,
        what: str,
        as_array: Callable[[object, str], np.ndarray],
    ) -> dict[str, tuple[np.ndarray, int]]:
        """Candidate modality -> (checked array, corpus size); every input checked before any
        is used, so a bad one changes nothing. ``arg`` and ``what`` name the input in messages.
        """
        if not isinstance(query_modality, str) or not query_modality.strip():
            raise ValueError(f"query modality must be a non-empty string, got {query_modality!r}")
        if not isinstance(lists, Mapping) or not lists:
            raise ValueError(f"{arg}: expected a non-empty mapping of modality -> {what}")
        checked = {}
        for m, arr in lists.items():
            if not isinstance(m, str) or not m.strip():
                raise ValueError(f"candidate modality must be a non-empty string, got {m!r}")
            if m not in corpus_sizes:
                raise ValueError(f"corpus_sizes: no size for candidate modality {m!r}")
            n = positive_int(corpus_sizes[m], f"corpus_sizes[{m!r}]: corpus size")
            checked[m] = (as_array(arr, f"{arg}[{m!r}]"), n)
        return checked

    def _add_slopes(self, key: tuple, slopes: np.ndarray) -> None:
        """Add one batch of (positive) slopes to ``key``'s running sums."""
        if slopes.size:
            self.count_[key] = self.count_.get(key, 0) + int(slopes.size)
            self.log_scale_sum_[key] = self.log_scale_sum_.get(key, 0.0) + float(
                np.log(slopes).sum()
            )

    @classmethod
    def _from_dict_header(cls, data, format_name: str, version: int, what: str):
        """A new estimator with the model, dimension, corpus sizes and query modalities of
        ``data``, and ``data["keys"]`` (checked to be a list); any malformed field raises."""
        if not isinstance(data, Mapping) or data.get("format") != format_name:
            noun = what.replace(" ", "-")
            raise ValueError(f"not {noun} data (expected format {format_name!r})")
        if data.get("version") != version:
            raise ValueError(
                f"{what}: unsupported version {data.get('version')!r} "
                f"(this mmgap reads version {version})"
            )
        dim = data.get("dim")
        if dim is not None:
            dim = positive_int(dim, f"{what}: dim")
        model_id = data.get("model_id")
        if model_id is not None and not isinstance(model_id, str):
            raise ValueError(f"{what}: model_id must be a string, got {model_id!r}")
        out = cls(model_id, dim)
        sizes = data.get("corpus_sizes") or {}
        if not isinstance(sizes, Mapping):
            raise ValueError(f"{what}: corpus_sizes must be an object")
        out.corpus_sizes_ = {
            str(m): positive_int(n, f"{what} corpus_sizes[{m!r}]: corpus size")
            for m, n in sizes.items()
        }
        qms = data.get("query_modalities")
        if not isinstance(qms, list) or not all(isinstance(q, str) and q.strip() for q in qms):
            raise ValueError(f"{what}: 'query_modalities' must be a list of names")
        out.query_modalities_ = set(qms)
        keys = data.get("keys")
        if not isinstance(keys, list):
            raise ValueError(f"{what}: 'keys' must be a list")
        return out, keys

    @staticmethod
    def _key_entry(entry, i: int, what: str) -> tuple[str, str, int, float]:
        """``(query modality, candidate modality, count, log_scale_sum)`` of ``keys[i]``."""
        if not isinstance(entry, Mapping):
            raise ValueError(f"{what}: keys[{i}] must be an object")
        q, c = entry.get("query_modality"), entry.get("candidate_modality")
        if not all(isinstance(s, str) and s.strip() for s in (q, c)):
            raise ValueError(f"{what}: keys[{i}] needs modality names")
        count = positive_int(entry.get("count"), f"{what}: keys[{i}].count")
        total = entry.get("log_scale_sum")
        if isinstance(total, bool) or not isinstance(total, (int, float)):
            raise ValueError(f"{what}: keys[{i}].log_scale_sum must be a number")
        if not math.isfinite(total) or not math.isfinite(total / count):
            raise ValueError(f"{what}: keys[{i}].log_scale_sum is not finite")
        return q, c, count, float(total)
