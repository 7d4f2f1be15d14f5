"""Background z-scores: how far a candidate stands above its own query's background, per modality.

For a query ``q`` and a candidate modality ``m``, almost every item of ``m`` is unrelated to ``q``.
Their cosines form a *background* with a per-query location ``mu_qm`` and a per-modality scale
``sigma_m``. A candidate list (the top ``k`` items of ``m`` by cosine) is the upper tail of that
background: among ``N_m`` items, the score at rank ``r`` is expected near ``mu_qm + sigma_m * a_r``,
where ``a_r`` is the expected ``r``-th largest of ``N_m`` standard normal draws
(:func:`normal_order_scores`).

* Calibration (:class:`BackgroundScale`) fits ``sigma_m`` for each (query modality, candidate
  modality): the slope of each calibration query's list against ``a_r`` over ranks 2..K, pooled
  across queries by a geometric mean. No labels are used.
* At search time the location ``mu_qm`` comes from the query's own list: the median of
  ``s_r - sigma_m * a_r`` over ranks 2..k. Rank 1 is left out, as it may be the relevant item.
* The score is ``z = (s - mu_qm) / sigma_m``: background standard deviations above this query's
  typical item of that modality. The best unrelated item of a modality scores about ``a_1`` (3.4
  for 3,000 items, 4.3 for 100,000); a relevant item stands out above that. Scores of texts and
  images are in the same unit, so one merged ranking and one threshold serve both.

Unlike the paper's standardization, the location follows each query (a vague query scores every
item lower), and the unit is the background's spread, not the spread of the best hits.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np

from ._validation import positive_int
from .background_math import (
    FIRST_BACKGROUND_RANK,
    as_lists,
    background_location,
    checked_lists,
    normal_order_scores,
    row_offsets,
    row_slopes,
    row_z,
    scaled_offsets,
    z_scores,
)


FORMAT_NAME = "mmgap.background_scale"
FORMAT_VERSION = 1

Key = tuple[str, str]  # (query modality, candidate modality)

__all__ = ["BackgroundScale", "FIRST_BACKGROUND_RANK", "background_location", "normal_order_scores"]


class BackgroundScale:
    """Per-(query modality, candidate modality) background scale, as a scikit-learn-style estimator.

    Parameters
    ----------
    model_id, dim : str or None, int or None
        The embedding model and dimension the scales are fitted for; saved by :meth:`to_dict`.

    Attributes
    ----------
    count_ : dict
        ``(query modality, candidate modality) -> number of lists`` the scale was fitted on.
    log_scale_sum_ : dict
        Sum of the per-list log slopes (so :meth:`partial_fit` merges exactly).
    corpus_sizes_ : dict
        Candidate modality -> corpus size at the last fit; the default ``n_items`` of
        :meth:`transform`.

    Notes
    -----
    The scale of a key is ``exp(mean(log slope))``: a geometric mean, robust to the few lists whose
    top ranks hold a cluster of near-duplicates.
    """

    def __init__(self, model_id: str | None = None, dim: int | None = None):
        self.model_id = model_id
        self.dim = dim
        self.count_: dict[Key, int] = {}
        self.log_scale_sum_: dict[Key, float] = {}
        self.corpus_sizes_: dict[str, int] = {}
        self.query_modalities_: set[str] = set()
        self._warned: set[Key] = set()  # keys whose pooled-scale fallback was announced

    # ------------------------------------------------------------------ fitting
    @property
    def is_fitted(self) -> bool:
        """Whether lists of any query modality were fitted."""
        return bool(self.query_modalities_)

    def fit(self, lists: Mapping[str, np.ndarray], query_modality: str, corpus_sizes):
        """Fit the scales of ``query_modality`` from best-first candidate lists (replaces its keys).

        Parameters
        ----------
        lists : mapping of str to array-like
            Candidate modality -> ``[Q, k]`` raw cosines of each calibration query's top ``k``
            items, best first, ``-inf`` padding. ``k`` of 50 or more gives a stable fit.
        query_modality : str
            Modality of the calibration queries.
        corpus_sizes : mapping of str to int
            Candidate modality -> number of items the lists were drawn from.

        Returns
        -------
        BackgroundScale
            ``self``.
        """
        for key in [k for k in self.count_ if k[0] == query_modality]:
            del self.count_[key]
            del self.log_scale_sum_[key]
        self.query_modalities_.discard(query_modality)
        return self.partial_fit(lists, query_modality, corpus_sizes)

    def partial_fit(self, lists: Mapping[str, np.ndarray], query_modality: str, corpus_sizes):
        """Add more calibration lists to the running fit; see :meth:`fit`."""
        if not isinstance(query_modality, str) or not query_modality.strip():
            raise ValueError(f"query modality must be a non-empty string, got {query_modality!r}")
        if not isinstance(lists, Mapping) or not lists:
            raise ValueError("lists: expected a non-empty mapping of modality -> score lists")
        for m, arr in lists.items():
            if not isinstance(m, str) or not m.strip():
                raise ValueError(f"candidate modality must be a non-empty string, got {m!r}")
            if m not in corpus_sizes:
                raise ValueError(f"corpus_sizes: no size for candidate modality {m!r}")
            n = positive_int(corpus_sizes[m], f"corpus_sizes[{m!r}]: corpus size")
            slopes = row_slopes(as_lists(arr, f"lists[{m!r}]"), n)
            self.corpus_sizes_[m] = n
            self.query_modalities_.add(query_modality)
            if slopes.size == 0:
                continue
            key = (query_modality, m)
            self.count_[key] = self.count_.get(key, 0) + int(slopes.size)
            self.log_scale_sum_[key] = self.log_scale_sum_.get(key, 0.0) + float(
                np.log(slopes).sum()
            )
        return self

    # ------------------------------------------------------------------ reading
    def scale(self, candidate_modality: str, query_modality: str) -> float:
        """The background scale (cosine units) of one key.

        A key whose lists were all too short to fit (fewer than three scores) takes the pooled
        scale of the other keys of its query modality (of every key if it has none, else 1.0),
        with a warning.
        """
        key = (query_modality, candidate_modality)
        if key in self.count_:
            return self._fitted_scale(key)
        if not self.has(candidate_modality, query_modality):
            raise KeyError(
                f"no background scale for {candidate_modality!r} candidates of "
                f"{query_modality!r} queries; calibrated for query modalities "
                f"{sorted(self.query_modalities_)} and candidates {sorted(self.corpus_sizes_)}"
            )
        pool = [k for k in self.count_ if k[0] == query_modality] or list(self.count_)
        if key not in self._warned:  # once per key and estimator, not on every search
            self._warned.add(key)
            warnings.warn(
                f"background scale of {candidate_modality!r} candidates for {query_modality!r} "
                "queries: no calibration list had three or more scores; using the pooled scale of "
                f"{pool or 'nothing (1.0)'}",
                UserWarning,
                stacklevel=2,
            )
        if not pool:
            return 1.0
        total = sum(self.log_scale_sum_[k] for k in pool)
        return math.exp(total / sum(self.count_[k] for k in pool))

    def _fitted_scale(self, key: Key) -> float:
        """The geometric mean of the slopes fitted for ``key`` (which has some)."""
        return math.exp(self.log_scale_sum_[key] / self.count_[key])

    def has(self, candidate_modality: str, query_modality: str) -> bool:
        """Whether the key (query modality, candidate modality) was calibrated."""
        return query_modality in self.query_modalities_ and candidate_modality in self.corpus_sizes_

    def has_query_modality(self, query_modality: str) -> bool:
        """Whether lists of ``query_modality`` queries were fitted."""
        return query_modality in self.query_modalities_

    def transform(
        self,
        lists,
        candidate_modality: str,
        query_modality: str,
        n_items: int | None = None,
    ) -> np.ndarray:
        """Background z-scores of best-first candidate lists ``[Q, k]`` of one modality.

        Parameters
        ----------
        lists : array-like
            ``[Q, k]`` raw cosines, best first, ``-inf`` padding.
        candidate_modality, query_modality : str
            The key whose scale is used.
        n_items : int, optional
            Current corpus size of the candidate modality; defaults to the size at fit time.

        Returns
        -------
        numpy.ndarray
            ``[Q, k]`` float64 z-scores, ``-inf`` where the input is padding. Order within a row is
            kept.
        """
        arr, valid = checked_lists(lists, f"{candidate_modality} candidates")
        sigma = self.scale(candidate_modality, query_modality)
        if n_items is None:
            n_items = self.corpus_sizes_.get(candidate_modality)
        n = positive_int(n_items, f"corpus size of {candidate_modality!r}")
        n = max(n, arr.shape[1])
        return z_scores(arr, valid, sigma, scaled_offsets((sigma,), (n,), arr.shape[1], 1)[1])

    def transform_full(
        self, lists: Mapping[str, np.ndarray], query_modality: str, n_items: Mapping[str, int]
    ) -> dict[str, np.ndarray] | None:
        """:meth:`transform` of several full ``[Q, k]`` lists at once, bit for bit.

        A search's lists cost one set of numpy calls, not one per modality. ``None`` where that
        does not apply (lists of different shapes, a key with no fitted scale, a corpus size that
        is not a positive int, padding, NaN or unsorted rows): :meth:`transform` then handles
        each list, errors and warnings included.
        """
        arrs = list(lists.values())
        shape = arrs[0].shape
        if not shape[0] or any(a.shape != shape for a in arrs):
            return None
        plan = self._one_pass_plan(lists, shape[1], query_modality, n_items)
        if plan is None:
            return None
        try:
            arr, valid = checked_lists(np.concatenate(arrs), "candidates")
        except ValueError:
            return None
        if valid is not None:
            return None
        n_q, k = shape
        scale_col, offsets = scaled_offsets(*plan, k, n_q)
        z = z_scores(arr, None, scale_col, offsets)
        return {m: z[i * n_q : (i + 1) * n_q] for i, m in enumerate(lists)}

    def transform_row(
        self, lists: Mapping[str, list[float]], query_modality: str, n_items: Mapping[str, int]
    ) -> dict[str, list[float]] | None:
        """:meth:`transform_full` of one query's lists of Python floats, bit for bit, without numpy.

        A search fuses one query, right after the store's query, when numpy's code is out of the
        CPU caches: plain Python costs a fraction there. ``None`` where :meth:`transform_full`
        would give ``None``, and for lists of fewer than two scores.
        """
        rows = list(lists.values())
        k = len(rows[0]) if rows else 0
        if k < FIRST_BACKGROUND_RANK or any(len(r) != k for r in rows):
            return None
        plan = self._one_pass_plan(lists, k, query_modality, n_items)
        if plan is None:
            return None
        for r in rows:  # checked_lists' rule: finite, and no score above the one before it
            if not all(map(math.isfinite, r)) or any(b - a > 1e-6 for a, b in zip(r, r[1:])):
                return None
        scales = plan[0]
        offsets = row_offsets(*plan, k)
        return {m: row_z(r, offsets[i], scales[i]) for i, (m, r) in enumerate(lists.items())}

    def _one_pass_plan(self, lists, k: int, query_modality: str, n_items: Mapping[str, int]):
        """``(scales, corpus sizes)`` of the keys of ``lists``, ``None`` if one is not plain.

        Not plain: a key with no fitted scale, or a corpus size that is not a positive int.
        """
        scales, ns = [], []
        for m in lists:
            n = n_items.get(m)
            n = self.corpus_sizes_.get(m) if n is None else n
            if (query_modality, m) not in self.count_ or type(n) is not int or n < 1:
                return None
            scales.append(self.scale(m, query_modality))
            ns.append(max(n, k))
        return tuple(scales), tuple(ns)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-ready dict: format, version, model, and per-key count, log-sum and scale."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "model_id": self.model_id,
            "dim": self.dim,
            "first_background_rank": FIRST_BACKGROUND_RANK,
            "corpus_sizes": dict(self.corpus_sizes_),
            "query_modalities": sorted(self.query_modalities_),
            "keys": [
                {
                    "query_modality": q,
                    "candidate_modality": c,
                    "count": self.count_[(q, c)],
                    "log_scale_sum": self.log_scale_sum_[(q, c)],
                    "scale": self._fitted_scale((q, c)),
                }
                for q, c in sorted(self.count_)
            ],
        }

    @classmethod
    def from_dict(cls, data) -> BackgroundScale:
        """Rebuild from :meth:`to_dict` output; any malformed field is a ``ValueError``."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT_NAME:
            raise ValueError(f"not background-scale data (expected format {FORMAT_NAME!r})")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"background scale: unsupported version {data.get('version')!r} "
                f"(this mmgap reads version {FORMAT_VERSION})"
            )
        dim = data.get("dim")
        if dim is not None:
            dim = positive_int(dim, "background scale: dim")
        model_id = data.get("model_id")
        if model_id is not None and not isinstance(model_id, str):
            raise ValueError(f"background scale: model_id must be a string, got {model_id!r}")
        out = cls(model_id, dim)
        sizes = data.get("corpus_sizes") or {}
        if not isinstance(sizes, Mapping):
            raise ValueError("background scale: corpus_sizes must be an object")
        out.corpus_sizes_ = {
            str(m): positive_int(n, f"background scale corpus_sizes[{m!r}]: corpus size")
            for m, n in sizes.items()
        }
        qms = data.get("query_modalities")
        if not isinstance(qms, list) or not all(isinstance(q, str) and q.strip() for q in qms):
            raise ValueError("background scale: 'query_modalities' must be a list of names")
        out.query_modalities_ = set(qms)
        keys = data.get("keys")
        if not isinstance(keys, list):
            raise ValueError("background scale: 'keys' must be a list")
        for i, entry in enumerate(keys):
            if not isinstance(entry, Mapping):
                raise ValueError(f"background scale: keys[{i}] must be an object")
            q, c = entry.get("query_modality"), entry.get("candidate_modality")
            count, total = entry.get("count"), entry.get("log_scale_sum")
            if not all(isinstance(s, str) and s.strip() for s in (q, c)):
                raise ValueError(f"background scale: keys[{i}] needs modality names")
            count = positive_int(count, f"background scale: keys[{i}].count")
            if isinstance(total, bool) or not isinstance(total, (int, float)):
                raise ValueError(f"background scale: keys[{i}].log_scale_sum must be a number")
            if not math.isfinite(total) or not math.isfinite(total / count):
                raise ValueError(f"background scale: keys[{i}].log_scale_sum is not finite")
            out.count_[(q, c)] = count
            out.log_scale_sum_[(q, c)] = float(total)
        return out

    def __repr__(self) -> str:
        keys = ", ".join(
            f"{q}->{c}: {self._fitted_scale((q, c)):.4f}" for q, c in sorted(self.count_)
        )
        return f"BackgroundScale({keys or 'not fitted'})"
