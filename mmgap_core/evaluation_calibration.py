"""Calibration for an evaluation: every fusion method fitted on the evaluation's own data.

:func:`fit_methods` fits what the named methods need (pseudo-positive statistics, background
scales, gold statistics, modality means, the second view of ``two-view-z``) transductively on the
evaluation queries or on separate calibration queries; :mod:`mmgap_core.evaluation` runs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._validation import as_embeddings
from .background import BackgroundScale
from .background_math import BACKGROUND_RANKS
from .centered_background import CenteredBackgroundScale
from .post_processing import centered_cosines, default_n_directions, top_directions
from .fusion import CenterFusion, FusionMethod, make_method, method_class
from .metrics import Qrels
from .mining import (
    DEFAULT_BLOCK_BYTES,
    ModalityTopK,
    PseudoPositives,
    gold_pair_scores,
    mine_pseudo_positives,
)
from .stats import ModalityStandardizer

__all__ = [
    "FittedCalibration",
    "fit_centered_scale_from_arrays",
    "fit_directions_from_arrays",
    "fit_methods",
]

CHUNK = 256  # queries at a time, bounding the [chunk, pool, d] embeddings read


@dataclass
class FittedCalibration:
    """What :func:`fit_methods` fitted, for a report's ``stats``."""

    setting: str
    n_calibration: int
    counts: dict[str, int]
    standardizer: ModalityStandardizer
    background: BackgroundScale | None
    gold: ModalityStandardizer | None
    notes: list[str]
    centered: CenteredBackgroundScale | None = None
    directions: dict[str, np.ndarray] | None = None


def fit_methods(
    retrieved: ModalityTopK,
    queries: np.ndarray,
    corpus: np.ndarray,
    labels: np.ndarray,
    qrels: Qrels,
    method_names: Sequence[str],
    *,
    query_modality: str = "text",
    calibration_queries=None,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> tuple[dict[str, FusionMethod], FittedCalibration]:
    """Calibrate and build each named method as :func:`evaluate_candidates` runs it.

    Parameters are those of :func:`evaluate_candidates` (``method_names``: parsed names).

    Returns
    -------
    tuple
        ``({name: fitted method}, FittedCalibration)``.
    """
    modalities = list(retrieved.modalities)
    notes = []

    # Pseudo-positive calibration: the top-1 of each modality. Transductive reuse of `retrieved` is
    # the same computation as mining the evaluation queries again.
    if calibration_queries is None:
        setting = (
            "transductive: calibrated on the evaluation queries themselves, without their labels"
        )
        cal_lists = retrieved.scores[:, :, :BACKGROUND_RANKS]
        pp_scores = retrieved.scores[:, :, 0]
        pp_labels = np.broadcast_to(np.asarray(modalities)[None, :], pp_scores.shape)
        valid = np.isfinite(pp_scores)
        pp_scores, pp_labels = pp_scores[valid], pp_labels[valid]
        n_cal = queries.shape[0]
    else:
        cal = as_embeddings(calibration_queries, "calibration queries", dim=corpus.shape[1])
        setting = f"inductive: calibrated on {cal.shape[0]} separate calibration queries"
        wide = any(method_class(n).needs_centered_scale for n in method_names)
        cal_top = mine_pseudo_positives(
            cal,
            corpus,
            labels,
            top_k=max(BACKGROUND_RANKS, retrieved.scores.shape[2]) if wide else BACKGROUND_RANKS,
            max_block_bytes=max_block_bytes,
        )
        cal_lists = cal_top.scores[:, :, :BACKGROUND_RANKS]
        first = PseudoPositives(
            cal_top.modalities, cal_top.indices[:, :, :1], cal_top.scores[:, :, :1]
        )
        pp_scores, pp_labels = first.pairs()
        n_cal = cal.shape[0]
    notes.append(setting)
    standardizer = ModalityStandardizer(dim=corpus.shape[1]).fit(
        pp_scores, pp_labels, query_modality
    )
    counts = {m: int((labels == m).sum()) for m in modalities}
    background = None
    if any(method_class(n).needs_background_scale for n in method_names):
        background = BackgroundScale(dim=corpus.shape[1]).fit(
            {m: cal_lists[:, j, :] for j, m in enumerate(modalities)}, query_modality, counts
        )

    gold = None
    if "standardize-gold" in method_names:
        g_scores, g_labels = gold_pair_scores(queries, corpus, labels, qrels.rows[:, :2])
        gold = ModalityStandardizer(dim=corpus.shape[1]).fit(g_scores, g_labels, query_modality)
        missing = set(modalities) - set(gold.candidate_modalities(query_modality))
        if missing:
            # No labelled positive in a modality: borrow the pseudo statistics there, and say so.
            notes.append(
                f"standardize-gold: no labelled positives in {sorted(missing)}; using pseudo stats"
            )
            for m in sorted(missing):
                sel = pp_labels == m
                gold.partial_fit(pp_scores[sel], pp_labels[sel], query_modality)

    center_means = None
    if any(method_class(n).needs_center_means for n in method_names):
        extra = {}
        if query_modality not in modalities:
            cal_src = queries if calibration_queries is None else cal
            extra[query_modality] = cal_src.mean(axis=0, dtype=np.float64)
        center_means = CenterFusion.fit(corpus, labels, extra).means

    centered = directions = None
    if any(method_class(n).needs_centered_scale for n in method_names):
        cal_q, pool_rows = (
            (queries, retrieved.indices) if calibration_queries is None else (cal, cal_top.indices)
        )
        directions = fit_directions_from_arrays(corpus, labels, center_means, cal_q, query_modality)
        centered = fit_centered_scale_from_arrays(
            cal_q,
            pool_rows[:, :, : retrieved.scores.shape[2]],
            corpus,
            modalities,
            center_means,
            query_modality,
            counts,
            directions,
        )

    fusers = {
        name: make_method(
            name,
            standardizer=standardizer,
            gold_standardizer=gold,
            center_means=center_means,
            background_scale=background,
            corpus_sizes=counts,
            centered_scale=centered,
            center_directions=directions,
        )
        for name in method_names
    }
    fitted = FittedCalibration(
        setting, n_cal, counts, standardizer, background, gold, notes, centered, directions
    )
    return fusers, fitted


def fit_centered_scale_from_arrays(
    cal_queries: np.ndarray,
    pool_rows: np.ndarray,
    corpus: np.ndarray,
    modalities: Sequence[str],
    means: dict[str, np.ndarray],
    query_modality: str,
    counts: dict[str, int],
    directions: dict[str, np.ndarray] | None = None,
) -> CenteredBackgroundScale:
    """Fit the centred-cosine scales from each calibration query's raw top pools.

    ``pool_rows`` is ``[Q, M, K]`` corpus rows (``-1`` padding), best raw cosine first, modalities
    in the order of ``modalities``. Queries are taken in chunks, bounding the ``[chunk, K, d]``
    embeddings read.
    """
    out = CenteredBackgroundScale(dim=corpus.shape[1])
    for s in range(0, cal_queries.shape[0], CHUNK):
        pools = {}
        for j, m in enumerate(modalities):
            rows = pool_rows[s : s + CHUNK, j, :]
            dirs = None if directions is None else (directions[query_modality], directions[m])
            cos = centered_cosines(
                cal_queries[s : s + CHUNK],
                means[query_modality],
                corpus[rows],
                means[m],
                directions=dirs,
            )
            pools[m] = np.where(rows >= 0, cos, -np.inf)
        out.partial_fit(pools, query_modality, counts)
    return out


def fit_directions_from_arrays(
    corpus, labels, means, queries, query_modality: str
) -> dict[str, np.ndarray]:
    """Each modality's top principal directions (:func:`default_n_directions` of them).

    The query modality, when the corpus holds none of it, takes them from the queries.
    """
    n = default_n_directions(corpus.shape[1])
    out = {str(m): top_directions(corpus[labels == m], means[m], n) for m in np.unique(labels)}
    if query_modality not in out:
        out[query_modality] = top_directions(queries, means[query_modality], n)
    return out
