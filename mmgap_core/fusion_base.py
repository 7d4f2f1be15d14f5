"""The fusion interface: a method re-scores each modality's candidates; one merge ranks them all.

:class:`FusionMethod` is the base of every method; :func:`merge_scored` turns its per-modality
scores into one :class:`FusedRanking`, breaking ties without favouring a modality.
:func:`merge_row` is its plain-Python form for one query without ties, which a search uses.
"""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ._validation import positive_int
from .candidates import CandidateBatch

__all__ = ["FusedRanking", "FusionMethod", "merge_row", "merge_scored", "tie_break_keys"]


@dataclass
class FusedRanking:
    """Merged ranking: row ``q`` lists query ``q``'s items best first.

    Attributes
    ----------
    ids : numpy.ndarray
        ``[Q, K]`` int64 candidate ids; -1 pads a short row.
    scores : numpy.ndarray
        ``[Q, K]`` float64 fused scores; ``-inf`` pads a short row.
    modality_codes : numpy.ndarray
        ``[Q, K]`` int64 index into ``modalities``; -1 pads a short row.
    modalities : list of str
        The candidate modalities, in list order.
    """

    ids: np.ndarray  # [Q, K] int64
    scores: np.ndarray  # [Q, K] float64
    modality_codes: np.ndarray  # [Q, K] int index into `modalities`, -1 for padding
    modalities: list[str] = field(default_factory=list)

    def modality_labels(self) -> np.ndarray:
        """``[Q, K]`` object array of each item's modality name (``""`` for padding)."""
        labels = np.asarray(self.modalities + [""], dtype=object)
        return labels[self.modality_codes]


def tie_break_keys(scores: np.ndarray, modalities: list[str]) -> np.ndarray:
    """Per query, a priority for each modality that decides exact score ties between modalities.

    Parameters
    ----------
    scores : numpy.ndarray
        ``[Q, T]`` each query's raw candidate scores (their bytes seed the coin).
    modalities : list of str
        The modalities in list order.

    Returns
    -------
    numpy.ndarray
        ``[Q, M]`` int64; a lower value wins a tie.

    Notes
    -----
    A coin per query, seeded by the query's own raw scores (CRC-32 of their bytes, then of each
    modality's name): the same query always gets the same order, whatever batch it is in, and
    across queries no modality is favoured.
    """
    out = np.empty((scores.shape[0], len(modalities)), dtype=np.int64)
    names = [m.encode("utf-8") for m in modalities]
    for q, row in enumerate(np.ascontiguousarray(scores)):
        seed = zlib.crc32(row.tobytes())
        out[q] = [zlib.crc32(name, seed) for name in names]
    return out


@lru_cache(maxsize=256)
def _layout(widths: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, within)``: modality index and rank within its list of each merged column."""
    codes = np.repeat(np.arange(len(widths), dtype=np.int64), widths)
    within = np.concatenate([np.arange(w, dtype=np.int64) for w in widths]) if widths else codes
    codes.setflags(write=False)
    within.setflags(write=False)
    return codes, within


@lru_cache(maxsize=64)
def _row_index(n_q: int) -> np.ndarray:
    """``[Q, 1]`` row numbers, to pick one column per row (read-only)."""
    rows = np.arange(n_q)[:, None]
    rows.setflags(write=False)
    return rows


def merge_scored(
    batch: CandidateBatch, scores: Mapping[str, np.ndarray], k: int | None
) -> FusedRanking:
    """Merge per-modality re-scored lists into one top-k list per query.

    Ties are broken without favouring a modality: first by the item's rank within its own
    modality's list (raw order), then by a per-query coin (:func:`tie_break_keys`).

    Parameters
    ----------
    batch : CandidateBatch
        The candidates that were scored.
    scores : mapping of str to numpy.ndarray
        Each modality's ``[Q, k_m]`` comparable scores (a method's :meth:`FusionMethod.score`).
    k : int or None
        How many to keep per query (``None``: all).

    Returns
    -------
    FusedRanking
    """
    if k is not None:
        k = positive_int(k, "k")
    mods = batch.modalities
    lists = [batch.lists[m] for m in mods]
    widths = []
    ranks = True  # ids that are list ranks (a search's lists) need no gathering
    for c in lists:
        widths.append(c.ids.shape[1])
        ranks = ranks and c.ids_are_ranks
    codes, within = _layout(tuple(widths))
    full = ranks or all(c.is_full for c in lists)  # no padding: no masking
    ids = None if ranks else np.concatenate([c.ids for c in lists], axis=1)
    if full:
        sc = np.concatenate([scores[m] for m in mods], axis=1)
    else:
        sc = np.concatenate(
            [np.where(c.ids >= 0, scores[m], -np.inf) for m, c in zip(mods, lists)], axis=1
        )
    sc = sc.astype(np.float64, copy=False)
    n_q, total = sc.shape
    k = total if k is None else min(k, total)
    # Sorting by score alone gives the rule's order unless two modalities tie exactly on a real
    # score (ties within one modality already follow the list rank: the sort is stable, and each
    # list's columns are in rank order). Only rows with such a tie pay for the coin.
    neg = -sc
    order = neg.argsort(axis=1, kind="stable")
    neg.sort(axis=1, kind="stable")  # the scores in that order (equal ones are interchangeable)
    s_sorted = -neg
    equal = s_sorted[:, 1:] == s_sorted[:, :-1]
    if np.count_nonzero(equal):  # count_nonzero: cheaper than .any() on a search's tiny rows
        cross = codes[order[:, 1:]] != codes[order[:, :-1]]
        tied = np.flatnonzero((equal & cross & np.isfinite(s_sorted[:, 1:])).any(axis=1))
        if tied.size:
            raw = np.concatenate(
                [np.where(c.ids[tied] >= 0, c.scores[tied], -np.inf) for c in lists], axis=1
            )
            coin = tie_break_keys(raw, mods)[:, codes]
            within_b = np.broadcast_to(within, coin.shape)
            order[tied] = np.lexsort((coin, within_b, -sc[tied]), axis=1)
            s_sorted = sc[_row_index(n_q), order]
    order = order[:, :k]
    out_sc = s_sorted[:, :k]
    out_ids = within[order] if ranks else ids[_row_index(n_q), order]
    out_codes = codes[order]
    finite = np.isfinite(out_sc)
    if not (full and np.count_nonzero(finite) == finite.size):
        pad = ~finite if full else ~finite | (out_ids < 0)
        if pad.any():
            out_ids[pad], out_sc[pad], out_codes[pad] = -1, -np.inf, -1
    return FusedRanking(out_ids, out_sc, out_codes, list(mods))


Ranked = list[tuple[int, float, int]]  # (position in its list, score, modality code), best first


def merge_row(scores: Mapping[str, list[float]], k: int) -> Ranked | None:
    """:func:`merge_scored` of one query's full lists of Python floats, bit for bit, without numpy.

    A search merges one query's few dozen scores, where numpy's per-call set-up costs more than
    the sort. ``None`` when two modalities tie exactly on a score (merge_scored's per-query coin
    decides those) or a score is not finite: merge with :func:`merge_scored` then.

    Returns
    -------
    list of (int, float, int) or None
        The top ``k``: each item's position in its modality's list, its score, and its
        modality's index in ``scores``.
    """
    rows = list(scores.values())
    values = [s for row in rows for s in row]  # every score, list after list
    # map() of builtins, not generators: a search pays for every Python-level step here.
    if not all(map(math.isfinite, values)):
        return None
    # Stable, as merge_scored's sort (reverse=True keeps equal scores in list order).
    order = sorted(range(len(values)), key=values.__getitem__, reverse=True)
    starts, codes = [], []  # per flat index: where its list starts, its modality code
    for code, row in enumerate(rows):
        starts += [len(codes)] * len(row)
        codes += [code] * len(row)
    if len(set(values)) != len(values):  # some exact tie: is it across modalities?
        ranked = [(values[i], codes[i]) for i in order]
        if any(a[0] == b[0] and a[1] != b[1] for a, b in zip(ranked, ranked[1:])):
            return None
    return [(i - starts[i], values[i], codes[i]) for i in order[:k]]


def merge_stacked(z: np.ndarray, k: int) -> Ranked | None:
    """:func:`merge_row` of equally long lists stacked as the rows of ``z`` (``[M, w]``).

    The sort is numpy's stable argsort (equal scores keep list order, as in :func:`merge_row`);
    an exact tie goes to :func:`merge_row` itself, which knows which ties it may order.
    """
    values = z.ravel().tolist()
    if not all(map(math.isfinite, values)):
        return None
    w = z.shape[1]
    if len(set(values)) != len(values):
        return merge_row({code: values[code * w : (code + 1) * w] for code in range(len(z))}, k)
    order = np.argsort(-z.ravel(), kind="stable")[:k].tolist()
    return [(i % w, values[i], i // w) for i in order]


class FusionMethod(ABC):
    """One way of putting scores of different modalities on one scale.

    Each method declares what it needs beyond the candidates' raw cosines, so callers can gather it
    (or say what is missing) without comparing method names.

    Attributes
    ----------
    name : str
        The name :func:`make_method` knows it by.
    needs_standardizer : bool
        Needs pseudo-positive statistics fitted by calibration (a fitted ``ModalityStandardizer``).
    needs_gold_standardizer : bool
        Needs statistics fitted from labelled pairs (evaluation only).
    needs_center_means : bool
        Needs each modality's mean embedding (fitted at calibration).
    needs_candidate_embeddings : bool
        Re-scores in embedding space: needs the query embeddings and a candidate embedding lookup.
    needs_background_scale : bool
        Needs per-modality background scales fitted by calibration (a fitted ``BackgroundScale``).
    needs_centered_scale : bool
        Needs the scales of centred-cosine pools fitted by calibration (a fitted
        ``CenteredBackgroundScale``).
    summary : str
        One line saying what the method does (shown by ``--help`` and the README).
    unit : str
        What its scores are measured in, for output that shows them.
    """

    name: str = ""
    summary: str = ""
    unit: str = ""
    needs_background_scale: bool = False
    needs_centered_scale: bool = False
    needs_standardizer: bool = False
    needs_gold_standardizer: bool = False
    needs_center_means: bool = False
    needs_candidate_embeddings: bool = False

    @abstractmethod
    def score(self, batch: CandidateBatch) -> dict[str, np.ndarray]:
        """Comparable scores ``[Q, k]`` for each modality's list."""

    def fuse(self, batch: CandidateBatch, k: int | None = None) -> FusedRanking:
        return merge_scored(batch, self.score(batch), k)

    def fuse_one(
        self,
        scores: Mapping[str, list[float]],
        query_modality: str,
        k: int,
        *,
        query: np.ndarray | None = None,
        embeddings: Mapping[str, np.ndarray] | None = None,
    ):
        """:meth:`fuse` of one query's full lists of raw cosines (Python floats), or ``None``.

        A method may give a plain-Python shortcut for a search's single query that returns what
        :meth:`fuse` would, bit for bit, as :func:`merge_row`'s list; ``None`` (the default, and
        wherever the shortcut does not apply) means: build a batch and call :meth:`fuse`.
        ``query`` (``[d]``) and ``embeddings`` (modality -> ``[k, d]`` candidates, in the lists'
        order) are given to methods that need candidate embeddings.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
