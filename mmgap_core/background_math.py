"""The formulas of the background model (numpy only): normal order scores, best-first list
checks, per-list slopes, the background location and background z.

:mod:`mmgap_core.background` describes the model and holds the estimator built on these.
"""

from __future__ import annotations

from functools import lru_cache
from statistics import NormalDist

import numpy as np

from ._validation import int_at_least, positive_int

FIRST_BACKGROUND_RANK = 2  # rank 1 may be the relevant item: it never sets the background
MIN_SCALE = 1e-6  # a list with no spread (all scores equal) gets this scale, not zero
#: Calibration lists hold each query's top this-many per modality: the background scale's fit.
BACKGROUND_RANKS = 50

__all__ = [
    "BACKGROUND_RANKS",
    "FIRST_BACKGROUND_RANK",
    "MIN_SCALE",
    "as_lists",
    "background_location",
    "checked_lists",
    "location",
    "normal_order_scores",
    "order_scores",
    "row_offsets",
    "row_slopes",
    "row_z",
    "scaled_offsets",
    "z_scores",
]


@lru_cache(maxsize=512)
def order_scores(n_items: int, k: int) -> np.ndarray:
    """:func:`normal_order_scores` without its argument checks, for callers holding plain ints."""
    inv = NormalDist().inv_cdf
    ranks = np.minimum(np.arange(1, k + 1), n_items)
    out = np.array([inv(1.0 - (r - 0.375) / (n_items + 0.25)) for r in ranks.tolist()])
    out.setflags(write=False)
    return out


@lru_cache(maxsize=256)
def scaled_offsets(scales: tuple[float, ...], sizes: tuple[int, ...], k: int, rows_each: int):
    """``([R, 1] scales, [R, k] scale * a_r)`` of keys stacked ``rows_each`` rows apiece.

    Read-only and cached per (scales, corpus sizes, k): a search reuses them.
    """
    scale_col = np.repeat(np.asarray(scales, dtype=np.float64), rows_each)[:, None]
    rows = [s * order_scores(n, k)[None, :] for s, n in zip(scales, sizes)]
    offsets = np.repeat(np.concatenate(rows), rows_each, axis=0)
    scale_col.setflags(write=False)
    offsets.setflags(write=False)
    return scale_col, offsets


def normal_order_scores(n_items: int, k: int) -> np.ndarray:
    """Expected ``r``-th largest of ``n_items`` standard normal draws, for ``r = 1..k``.

    Parameters
    ----------
    n_items : int
        Number of draws (the modality's corpus size), at least 1.
    k : int
        Number of ranks wanted; ranks beyond ``n_items`` repeat the last one.

    Returns
    -------
    numpy.ndarray
        ``[k]`` float64, decreasing (read-only, cached).

    Notes
    -----
    Blom's approximation ``Phi^-1(1 - (r - 0.375) / (n + 0.25))``, accurate to about 0.01 here.
    """
    return order_scores(positive_int(n_items, "n_items"), int_at_least(k, "k", 0))


def as_lists(scores, name: str) -> np.ndarray:
    """Best-first score lists ``[Q, k]`` as float64; ``-inf`` pads short rows at their end."""
    return checked_lists(scores, name)[0]


def checked_lists(scores, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`as_lists` and the ``[Q, k]`` mask of real scores (``None``: every score is real).

    One ``isfinite`` pass serves the common case of full rows; the padding checks run only when a
    row is short.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected best-first score lists [n_queries, k], got {arr.shape}")
    valid = np.isfinite(arr)
    # count_nonzero, not .all()/.any(): a search's lists are tiny, and a ufunc reduction's set-up
    # costs more than the pass.
    full = np.count_nonzero(valid) == valid.size
    if not full and (np.isnan(arr).any() or np.isposinf(arr).any()):
        raise ValueError(f"{name}: scores contain NaN or +inf")
    if arr.shape[1] > 1:
        # Padding only at the end of a row, and scores non-increasing (float noise tolerated).
        if full:
            if np.count_nonzero((arr[:, 1:] - arr[:, :-1]) > 1e-6):
                raise ValueError(f"{name}: each row must be sorted best first (descending scores)")
        else:
            if (~valid[:, :-1] & valid[:, 1:]).any():
                raise ValueError(f"{name}: -inf padding must come after every real score in a row")
            both = valid[:, :-1] & valid[:, 1:]
            filled = np.where(valid, arr, 0.0)
            if (np.where(both, filled[:, 1:] - filled[:, :-1], 0.0) > 1e-6).any():
                raise ValueError(f"{name}: each row must be sorted best first (descending scores)")
    return arr, None if full else valid


def row_slopes(lists: np.ndarray, n_items: int) -> np.ndarray:
    """Per-row least-squares slope of scores against normal order scores, over ranks 2..k.

    Rows with fewer than three real scores give no slope and are left out.
    """
    k = lists.shape[1]
    a = normal_order_scores(n_items, k)
    lengths = np.isfinite(lists).sum(axis=1)
    out = []
    for length in np.unique(lengths):
        if length < FIRST_BACKGROUND_RANK + 1:
            continue
        rows = lists[lengths == length, FIRST_BACKGROUND_RANK - 1 : length]
        x = a[FIRST_BACKGROUND_RANK - 1 : length]
        xc = x - x.mean()
        denom = float(xc @ xc)
        if denom <= 0:  # all ranks clamped to n_items: no spread to fit
            continue
        out.append((rows - rows.mean(axis=1, keepdims=True)) @ xc / denom)
    if not out:
        return np.empty(0)
    return np.maximum(np.concatenate(out), MIN_SCALE)


def background_location(lists: np.ndarray, scale: float, n_items: int) -> np.ndarray:
    """Each row's background location ``mu``: median of ``s_r - scale * a_r`` over ranks 2..k.

    A row with one real score puts it at the expected best background score (``z = a_1``); a row
    with none gets ``nan``.

    Parameters
    ----------
    lists : numpy.ndarray
        ``[Q, k]`` float64 best-first scores, ``-inf`` padding at the end of a row.
    scale : float
        The background scale ``sigma`` of the key.
    n_items : int
        Corpus size of the candidate modality (at least ``k``).

    Returns
    -------
    numpy.ndarray
        ``[Q]`` float64 locations.
    """
    valid = np.isfinite(lists)
    a = normal_order_scores(n_items, lists.shape[1])
    return location(lists, scale * a[None, :], None if valid.all() else valid)


def location(lists: np.ndarray, offsets: np.ndarray, valid: np.ndarray | None):
    """:func:`background_location` given ``scale * a_r`` (``[1 or Q, k]``); ``valid=None``: full."""
    q, k = lists.shape
    resid = lists - offsets
    if valid is None or k == 0:
        # Every row is full (the usual case): one group of length k, no per-length loop.
        if k == 0:
            return np.full(q, np.nan)
        if k < FIRST_BACKGROUND_RANK:
            return resid[:, 0].copy()
        return row_median(resid[:, FIRST_BACKGROUND_RANK - 1 :])
    lengths = valid.sum(axis=1)
    mu = np.full(q, np.nan)
    for length in np.unique(lengths).tolist():
        if length == 0:
            continue
        rows = lengths == length
        if length < FIRST_BACKGROUND_RANK:
            mu[rows] = resid[rows, 0]
        else:
            mu[rows] = row_median(resid[rows, FIRST_BACKGROUND_RANK - 1 : length])
    return mu


def row_median(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=1)`` of finite rows, bit for bit, without its generic overhead.

    ``x`` is a temporary of the caller's: it is partitioned in place.
    """
    n = x.shape[1]
    half = n // 2
    if n % 2:
        x.partition(half, axis=1)
        return x[:, half] + 0.0  # + 0.0: np.median's -0.0 -> 0.0
    x.partition((half - 1, half), axis=1)
    return np.mean(x[:, half - 1 : half + 1], axis=1)  # np.median's own mean of the middle two


def z_scores(arr: np.ndarray, valid, scale, offsets: np.ndarray) -> np.ndarray:
    """Background z of best-first rows: ``(s - mu) / scale``, ``-inf`` where ``valid`` is False.

    ``scale`` is a float or a ``[Q, 1]`` column, ``offsets`` is ``scale * a_r`` (``[1 or Q, k]``).
    """
    mu = location(arr, offsets, valid)
    if valid is None:  # full rows: every score and location is finite
        return (arr - mu[:, None]) / scale
    with np.errstate(invalid="ignore"):
        z = (arr - mu[:, None]) / scale
    return np.where(valid, z, -np.inf)


# ------------------------------------------------------------------ one query in plain Python
@lru_cache(maxsize=256)
def row_offsets(scales: tuple[float, ...], sizes: tuple[int, ...], k: int):
    """Per key, ``scale * a_r`` (``r = 1..k``) as Python floats: :func:`scaled_offsets`' values."""
    return tuple(tuple(row) for row in scaled_offsets(scales, sizes, k, 1)[1].tolist())


def row_z(scores: list[float], offsets: tuple[float, ...], scale: float) -> list[float]:
    """:func:`z_scores` of one full, finite, best-first row of at least two scores, bit for bit.

    Plain Python: on one query's few dozen scores, numpy's per-call set-up costs more than the
    arithmetic, and a search pays it cold, right after the store's query.
    """
    first = FIRST_BACKGROUND_RANK - 1
    resid = sorted([s - a for s, a in zip(scores[first:], offsets[first:])])
    half = len(resid) // 2
    # np.median's values: the middle one (+ 0.0 turns -0.0 into 0.0), or the mean of the two.
    mu = resid[half] + 0.0 if len(resid) % 2 else (resid[half - 1] + resid[half]) / 2
    return [(s - mu) / scale for s in scores]
