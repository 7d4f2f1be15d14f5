"""The second view of the ``two-view-z`` method: background z of post-processed cosines.

Each embedding has its modality's mean subtracted and its modality's top ``D`` principal
directions projected out, then is renormalised: "all-but-the-top" (Mu & Viswanath 2018,
``D = max(1, round(d / 100))``, 5 for 512-d CLIP). The mean is the modality gap's offset (the
step of GR-CLIP and the ``center`` method); the top directions carry variance shared by the
items of a modality, more than by their content. In a raw cosine both add per-item noise
unrelated to the query, so a candidate's post-processed cosine is a second, partly independent
measure of the same match. ``two-view-z`` averages the background z of both views
(:mod:`mmgap_core.fusion_two_view`).

The candidates come from the store's raw-cosine index: a modality's pool is its top ``k`` by raw
cosine, and its post-processed cosines, sorted, are *not* the top ``k`` of that view's
background. How they spread against the normal order scores ``a_r`` depends on ``k`` (on
CLIP-like data the slope at ``k = 10`` is about 1.5 times the slope at ``k = 200``). So
:class:`CenteredBackgroundScale` fits the scale of each (query modality, candidate modality) per
pool size, on a grid (:data:`POOL_SIZES`), and interpolates in ``log k``. Location and z then
follow :mod:`mmgap_core.background`: ``z = (c - mu_qm) / sigma_m(k)``, ``mu_qm`` the median of
``c_r - sigma_m(k) * a_r`` over ranks 2..k of the query's sorted pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ._validation import positive_int
from .background_math import (
    FIRST_BACKGROUND_RANK,
    background_location,
    location,
    row_slopes,
    scaled_offsets,
)
from .slope_fit import LogSlopeFit

FORMAT_NAME = "mmgap.centered_background_scale"
FORMAT_VERSION = 1

#: Pool sizes (candidates per modality) the centred scale is fitted at; others are interpolated.
POOL_SIZES = (6, 8, 10, 15, 20, 30, 50, 75, 100, 150, 200)

Key = tuple[str, str, int]  # (query modality, candidate modality, pool size)

__all__ = ["POOL_SIZES", "CenteredBackgroundScale"]


def _pools(arr, name: str) -> np.ndarray:
    """``[Q, k]`` float64 centred cosines in raw-rank order; ``-inf`` may pad a row's end only."""
    out = np.asarray(arr, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"{name}: expected centred cosines [n_queries, k], got shape {out.shape}")
    valid = np.isfinite(out)
    if np.count_nonzero(valid) == valid.size:  # the usual case: nothing padded
        return out
    if np.isnan(out).any() or np.isposinf(out).any():
        raise ValueError(f"{name}: centred cosines contain NaN or +inf")
    if out.shape[1] > 1 and (~valid[:, :-1] & valid[:, 1:]).any():
        raise ValueError(f"{name}: -inf padding must come after every real score in a row")
    return out


class CenteredBackgroundScale(LogSlopeFit):
    """Per-(query modality, candidate modality, pool size) scale of centred-cosine pools.

    scikit-learn style: :meth:`fit` / :meth:`partial_fit` / :meth:`transform`, fitted attributes
    with a trailing underscore.

    Parameters
    ----------
    model_id, dim : str or None, int or None
        The embedding model and dimension the scales are fitted for; saved by :meth:`to_dict`.

    Attributes
    ----------
    count_, log_scale_sum_ : dict
        ``(query modality, candidate modality, pool size) ->`` number of pools fitted and the sum
        of their log slopes (the scale is the geometric mean, as in
        :class:`~mmgap_core.background.BackgroundScale`).
    corpus_sizes_ : dict
        Candidate modality -> corpus size at the last fit.
    query_modalities_ : set of str
        Query modalities fitted.
    """

    def __init__(self, model_id: str | None = None, dim: int | None = None):
        super().__init__(model_id, dim)
        self._grids: dict[tuple[str, str], list[tuple[int, float]]] = {}  # per key: (size, log)

    def fit(self, pools: Mapping[str, np.ndarray], query_modality: str, corpus_sizes):
        """Fit the scales of ``query_modality`` (replacing its keys).

        Parameters
        ----------
        pools : mapping of str to array-like
            Candidate modality -> ``[Q, K]`` centred cosines of each calibration query's top ``K``
            items *by raw cosine*, in that raw order, ``-inf`` padding. Every grid size up to
            ``K`` (and ``K`` itself) is fitted from the first that-many of each full row.
        query_modality : str
        corpus_sizes : mapping of str to int
            Candidate modality -> number of items the pools were drawn from.

        Returns
        -------
        CenteredBackgroundScale
            ``self``.
        """
        return super().fit(pools, query_modality, corpus_sizes)

    _INPUT = ("pools", "centred cosines", _pools)

    def _add_lists(self, query_modality: str, candidate_modality: str, arr, n: int) -> None:
        """Each grid size up to the pool's width, from the first that-many of each full row."""
        self._grids.clear()
        # The longest real row, not the array's width: a self-excluded pool is one short.
        width = int(np.isfinite(arr).sum(axis=1).max()) if arr.size else 0
        sizes = sorted({g for g in POOL_SIZES if g <= width} | ({width} if width >= 3 else set()))
        for g in sizes:
            head = arr[:, :g]
            full = head[np.isfinite(head).all(axis=1)]
            if full.shape[0]:
                slopes = row_slopes(-np.sort(-full, axis=1), max(n, g))
                self._add_slopes((query_modality, candidate_modality, g), slopes)

    def has(self, candidate_modality: str, query_modality: str) -> bool:
        """Whether the key (query modality, candidate modality) was calibrated.

        A calibrated key may still have no scale (:meth:`has_scale`): its pools were all too
        short to fit, as in a modality of a few items.
        """
        return query_modality in self.query_modalities_ and candidate_modality in self.corpus_sizes_

    def has_scale(self, candidate_modality: str, query_modality: str) -> bool:
        """Whether some pool size of the key (query modality, candidate modality) was fitted."""
        return any(k[0] == query_modality and k[1] == candidate_modality for k in self.count_)

    def scale(self, candidate_modality: str, query_modality: str, k: int) -> float:
        """The scale for pools of ``k`` candidates: log-log interpolated, clamped at the grid ends.

        Raises
        ------
        KeyError
            When no pool size of the key was fitted.
        """
        k = positive_int(k, "pool size")
        grid = self._grids.get((query_modality, candidate_modality))
        if grid is None:
            grid = sorted(
                (key[2], self.log_scale_sum_[key] / self.count_[key])
                for key in self.count_
                if key[0] == query_modality and key[1] == candidate_modality
            )
            self._grids[(query_modality, candidate_modality)] = grid
        if not grid:
            raise KeyError(
                f"no centred background scale for {candidate_modality!r} candidates of "
                f"{query_modality!r} queries; fitted keys: {sorted({k[:2] for k in self.count_})}"
            )
        if k <= grid[0][0]:
            return math.exp(grid[0][1])
        for (g0, s0), (g1, s1) in zip(grid, grid[1:]):
            if k <= g1:
                t = (math.log(k) - math.log(g0)) / (math.log(g1) - math.log(g0))
                return math.exp(s0 + t * (s1 - s0))
        return math.exp(grid[-1][1])

    def transform(
        self, pools, candidate_modality: str, query_modality: str, n_items: int | None = None
    ) -> np.ndarray:
        """Background z of each candidate's centred cosine, in the pools' own (raw) order.

        Parameters
        ----------
        pools : array-like
            ``[Q, k]`` centred cosines of each query's candidates in raw-rank order, ``-inf``
            padding.
        candidate_modality, query_modality : str
        n_items : int, optional
            Current corpus size of the candidate modality; defaults to the size at fit time.

        Returns
        -------
        numpy.ndarray
            ``[Q, k]`` float64, ``-inf`` where the input is padding.
        """
        arr = _pools(pools, f"{candidate_modality} centred cosines")
        if n_items is None:
            n_items = self.corpus_sizes_.get(candidate_modality)
        n = positive_int(n_items, f"corpus size of {candidate_modality!r}")
        valid = np.isfinite(arr)
        if np.count_nonzero(valid) == valid.size:  # full rows (a search's): one group
            sigma = self.scale(candidate_modality, query_modality, arr.shape[1])
            mu = background_location(-np.sort(-arr, axis=1), sigma, max(n, arr.shape[1]))
            return (arr - mu[:, None]) / sigma
        lengths = valid.sum(axis=1)
        out = np.full(arr.shape, -np.inf)
        for length in np.unique(lengths).tolist():
            if length == 0:
                continue
            rows = lengths == length
            part = arr[rows, :length]
            sigma = self.scale(candidate_modality, query_modality, length)
            mu = background_location(-np.sort(-part, axis=1), sigma, max(n, length))
            out[rows, :length] = (part - mu[:, None]) / sigma
        return out

    def transform_stacked(
        self, pools: Mapping[str, np.ndarray], query_modality: str, n_items: Mapping[str, int]
    ) -> np.ndarray | None:
        """:meth:`transform` of full ``[Q, k]`` pools as one ``[M * Q, k]`` array, key after key.

        Bit for bit :meth:`transform`'s z. ``None`` where that does not apply (pools of different
        shapes or narrower than two, a key with no scale, a corpus size that is not a positive
        int, a value that is not finite). :meth:`transform_full` splits it per key.
        """
        stacked = self._stacked_plan(pools, query_modality, n_items, FIRST_BACKGROUND_RANK)
        if stacked is None:
            return None
        (n_q, k), plan = stacked
        arr = np.concatenate(list(pools.values())).astype(np.float64, copy=False)
        if np.count_nonzero(np.isfinite(arr)) != arr.size:
            return None
        # The same per-row values as transform's sigma * a_r, stacked key after key.
        scale_col, offsets = scaled_offsets(*plan, k, n_q)
        mu = location(-np.sort(-arr, axis=1), offsets, None)
        return (arr - mu[:, None]) / scale_col

    def _plain_scale(self, candidate_modality: str, query_modality: str, k: int) -> float | None:
        """The scale for pools of ``k`` (:meth:`scale`), ``None`` where the key has none."""
        try:
            return self.scale(candidate_modality, query_modality, k)
        except KeyError:
            return None

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-ready dict: format, version, model, and per-key count and log-sum."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "model_id": self.model_id,
            "dim": self.dim,
            "corpus_sizes": dict(self.corpus_sizes_),
            "query_modalities": sorted(self.query_modalities_),
            "keys": [
                {
                    "query_modality": q,
                    "candidate_modality": c,
                    "pool_size": g,
                    "count": self.count_[(q, c, g)],
                    "log_scale_sum": self.log_scale_sum_[(q, c, g)],
                }
                for q, c, g in sorted(self.count_)
            ],
        }

    @classmethod
    def from_dict(cls, data) -> CenteredBackgroundScale:
        """Rebuild from :meth:`to_dict` output; any malformed field is a ``ValueError``."""
        what = "centred background scale"
        out, keys = cls._from_dict_header(data, FORMAT_NAME, FORMAT_VERSION, what)
        for i, entry in enumerate(keys):
            q, c, count, total = cls._key_entry(entry, i, what)
            g = positive_int(entry.get("pool_size"), f"{what}: keys[{i}].pool_size")
            out.count_[(q, c, g)] = count
            out.log_scale_sum_[(q, c, g)] = total
        return out

    def __repr__(self) -> str:
        keys = sorted({k[:2] for k in self.count_})
        return f"CenteredBackgroundScale({', '.join(f'{q}->{c}' for q, c in keys) or 'not fitted'})"
