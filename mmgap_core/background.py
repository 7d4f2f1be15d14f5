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
from operator import sub

import numpy as np

from ._validation import positive_int
from .slope_fit import LogSlopeFit
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


class BackgroundScale(LogSlopeFit):
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
        super().__init__(model_id, dim)
        self._warned: set[Key] = set()  # keys whose pooled-scale fallback was announced

    # ------------------------------------------------------------------ fitting
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
        return super().fit(lists, query_modality, corpus_sizes)

    _INPUT = ("lists", "score lists", as_lists)

    def _add_lists(self, query_modality: str, candidate_modality: str, arr, n: int) -> None:
        self._add_slopes((query_modality, candidate_modality), row_slopes(arr, n))

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

    def transform_stacked(
        self, lists: Mapping[str, np.ndarray], query_modality: str, n_items: Mapping[str, int]
    ) -> np.ndarray | None:
        """:meth:`transform` of full ``[Q, k]`` lists as one ``[M * Q, k]`` array, key after key.

        Bit for bit :meth:`transform`'s z. ``None`` where that does not apply (lists of different
        shapes, a key with no fitted scale, a corpus size that is not a positive int, padding,
        NaN or unsorted rows). :meth:`transform_full` splits it per key.
        """
        stacked = self._stacked_plan(lists, query_modality, n_items)
        if stacked is None:
            return None
        (n_q, k), plan = stacked
        try:
            arr, valid = checked_lists(np.concatenate(list(lists.values())), "candidates")
        except ValueError:
            return None
        if valid is not None:
            return None
        scale_col, offsets = scaled_offsets(*plan, k, n_q)
        return z_scores(arr, None, scale_col, offsets)

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
            if not all(map(math.isfinite, r)) or max(map(sub, r[1:], r)) > 1e-6:
                return None
        scales = plan[0]
        offsets = row_offsets(*plan, k)
        return {m: row_z(r, offsets[i], scales[i]) for i, (m, r) in enumerate(lists.items())}

    def _plain_scale(self, candidate_modality: str, query_modality: str, k: int) -> float | None:
        """The fitted scale of the key (one for every list length), ``None`` if unfitted."""
        if (query_modality, candidate_modality) not in self.count_:
            return None  # no pooled fallback (and its warning) on the one-pass paths
        return self.scale(candidate_modality, query_modality)

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
        out, keys = cls._from_dict_header(data, FORMAT_NAME, FORMAT_VERSION, "background scale")
        for i, entry in enumerate(keys):
            q, c, count, total = cls._key_entry(entry, i, "background scale")
            out.count_[(q, c)] = count
            out.log_scale_sum_[(q, c)] = total
        return out

    def __repr__(self) -> str:
        keys = ", ".join(
            f"{q}->{c}: {self._fitted_scale((q, c)):.4f}" for q, c in sorted(self.count_)
        )
        return f"BackgroundScale({keys or 'not fitted'})"
