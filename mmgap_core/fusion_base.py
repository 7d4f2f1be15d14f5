"""The fusion interface: a method re-scores each modality's candidate list; one merge ranks them all.

:class:`FusionMethod` is the base of every method; :func:`merge_scored` turns its per-modality
scores into one :class:`FusedRanking`, breaking ties without favouring a modality.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ._validation import positive_int
from .candidates import CandidateBatch

__all__ = ["FusedRanking", "FusionMethod", "merge_scored", "tie_break_keys"]


@dataclass
class FusedRanking:
    """Merged ranking: row q lists query q's items best first; ``ids`` -1 / ``scores`` -inf pad a row."""

    ids: np.ndarray  # [Q, K] int64
    scores: np.ndarray  # [Q, K] float64
    modality_codes: np.ndarray  # [Q, K] int index into `modalities`, -1 for padding
    modalities: list[str] = field(default_factory=list)

    def modality_labels(self) -> np.ndarray:
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


def merge_scored(
    batch: CandidateBatch, scores: Mapping[str, np.ndarray], k: int | None
) -> FusedRanking:
    """Merge per-modality re-scored lists into one top-k list per query.

    Ties are broken without favouring a modality: first by the item's rank within its own
    modality's list (raw order), then by a per-query coin (:func:`tie_break_keys`).
    """
    if k is not None:
        k = positive_int(k, "k")
    mods = batch.modalities
    ids = np.concatenate([batch.lists[m].ids for m in mods], axis=1)
    sc = np.concatenate(
        [np.where(batch.lists[m].valid, scores[m], -np.inf) for m in mods], axis=1
    ).astype(np.float64)
    codes = np.concatenate(
        [np.full(batch.lists[m].ids.shape, j, dtype=np.int64) for j, m in enumerate(mods)], axis=1
    )
    within = np.concatenate(
        [
            np.broadcast_to(np.arange(batch.lists[m].ids.shape[1]), batch.lists[m].ids.shape)
            for m in mods
        ],
        axis=1,
    )
    raw = np.concatenate(
        [np.where(batch.lists[m].valid, batch.lists[m].scores, -np.inf) for m in mods], axis=1
    )
    coin = np.take_along_axis(tie_break_keys(raw, mods), codes, axis=1)
    total = ids.shape[1]
    k = total if k is None else min(k, total)
    order = np.lexsort((coin, within, -sc), axis=1)[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_sc = np.take_along_axis(sc, order, axis=1)
    out_codes = np.take_along_axis(codes, order, axis=1)
    pad = ~np.isfinite(out_sc) | (out_ids < 0)
    out_ids[pad], out_sc[pad], out_codes[pad] = -1, -np.inf, -1
    return FusedRanking(out_ids, out_sc, out_codes, list(mods))


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
    summary : str
        One line saying what the method does (shown by ``--help`` and the README).
    unit : str
        What its scores are measured in, for output that shows them.
    """

    name: str = ""
    summary: str = ""
    unit: str = ""
    needs_background_scale: bool = False
    needs_standardizer: bool = False
    needs_gold_standardizer: bool = False
    needs_center_means: bool = False
    needs_candidate_embeddings: bool = False

    @abstractmethod
    def score(self, batch: CandidateBatch) -> dict[str, np.ndarray]:
        """Comparable scores ``[Q, k]`` for each modality's list."""

    def fuse(self, batch: CandidateBatch, k: int | None = None) -> FusedRanking:
        return merge_scored(batch, self.score(batch), k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
