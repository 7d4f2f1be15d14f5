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
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from ._validation import int_at_least, positive_int


FORMAT_NAME = "mmgap.background_scale"
FORMAT_VERSION = 1
FIRST_BACKGROUND_RANK = 2  # rank 1 may be the relevant item: it never sets the background
MIN_SCALE = 1e-6  # a list with no spread (all scores equal) gets this scale, not zero

Key = tuple[str, str]  # (query modality, candidate modality)

__all__ = ["BackgroundScale", "FIRST_BACKGROUND_RANK", "normal_order_scores"]


@lru_cache(maxsize=512)
def _order_scores(n_items: int, k: int) -> np.ndarray:
    inv = NormalDist().inv_cdf
    ranks = np.minimum(np.arange(1, k + 1), n_items)
    out = np.array([inv(1.0 - (r - 0.375) / (n_items + 0.25)) for r in ranks.tolist()])
    out.setflags(write=False)
    return out


@lru_cache(maxsize=256)
def _offsets(scales: tuple[float, ...], sizes: tuple[int, ...], k: int, rows_each: int):
    """``([R, 1] scales, [R, k] scale * a_r)`` of keys stacked ``rows_each`` rows apiece.

    Read-only and cached per (scales, corpus sizes, k): a search reuses them.
    """
    scale_col = np.repeat(np.asarray(scales, dtype=np.float64), rows_each)[:, None]
    rows = [s * _order_scores(n, k)[None, :] for s, n in zip(scales, sizes)]
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
    return _order_scores(positive_int(n_items, "n_items"), int_at_least(k, "k", 0))


def _as_lists(scores, name: str) -> np.ndarray:
    """Best-first score lists ``[Q, k]`` as float64; ``-inf`` pads short rows at their end."""
    return _checked_lists(scores, name)[0]


def _checked_lists(scores, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`_as_lists` and the ``[Q, k]`` mask of real scores (``None``: every score is real).

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
    return _location(lists, scale * a[None, :], None if valid.all() else valid)


def _location(lists: np.ndarray, offsets: np.ndarray, valid: np.ndarray | None):
    """:func:`background_location` given ``scale * a_r`` (``[1 or Q, k]``); ``valid=None``: full."""
    q, k = lists.shape
    resid = lists - offsets
    if valid is None or k == 0:
        # Every row is full (the usual case): one group of length k, no per-length loop.
        if k == 0:
            return np.full(q, np.nan)
        if k < FIRST_BACKGROUND_RANK:
            return resid[:, 0].copy()
        return _row_median(resid[:, FIRST_BACKGROUND_RANK - 1 :])
    lengths = valid.sum(axis=1)
    mu = np.full(q, np.nan)
    for length in np.unique(lengths).tolist():
        if length == 0:
            continue
        rows = lengths == length
        if length < FIRST_BACKGROUND_RANK:
            mu[rows] = resid[rows, 0]
        else:
            mu[rows] = _row_median(resid[rows, FIRST_BACKGROUND_RANK - 1 : length])
    return mu


def _row_median(x: np.ndarray) -> np.ndarray:
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


def _z_scores(arr: np.ndarray, valid, scale, offsets: np.ndarray) -> np.ndarray:
    """Background z of best-first rows: ``(s - mu) / scale``, ``-inf`` where ``valid`` is False.

    ``scale`` is a float or a ``[Q, 1]`` column, ``offsets`` is ``scale * a_r`` (``[1 or Q, k]``).
    """
    mu = _location(arr, offsets, valid)
    if valid is None:  # full rows: every score and location is finite
        return (arr - mu[:, None]) / scale
    with np.errstate(invalid="ignore"):
        z = (arr - mu[:, None]) / scale
    return np.where(valid, z, -np.inf)


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
            slopes = row_slopes(_as_lists(arr, f"lists[{m!r}]"), n)
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
        arr, valid = _checked_lists(lists, f"{candidate_modality} candidates")
        sigma = self.scale(candidate_modality, query_modality)
        if n_items is None:
            n_items = self.corpus_sizes_.get(candidate_modality)
        n = positive_int(n_items, f"corpus size of {candidate_modality!r}")
        n = max(n, arr.shape[1])
        return _z_scores(arr, valid, sigma, _offsets((sigma,), (n,), arr.shape[1], 1)[1])

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
        scales, ns = [], []
        for m, a in lists.items():
            n = n_items.get(m)
            n = self.corpus_sizes_.get(m) if n is None else n
            fitted = (query_modality, m) in self.count_
            if a.shape != shape or not fitted or type(n) is not int or n < 1 or not shape[0]:
                return None
            scales.append(self.scale(m, query_modality))
            ns.append(max(n, shape[1]))
        try:
            arr, valid = _checked_lists(np.concatenate(arrs), "candidates")
        except ValueError:
            return None
        if valid is not None:
            return None
        n_q, k = shape
        scale_col, offsets = _offsets(tuple(scales), tuple(ns), k, n_q)
        z = _z_scores(arr, None, scale_col, offsets)
        return {m: z[i * n_q : (i + 1) * n_q] for i, m in enumerate(lists)}

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
