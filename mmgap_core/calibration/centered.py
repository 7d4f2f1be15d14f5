"""Calibration of the centred view of ``two-view-z``, through the store's own index.

The centred scale describes how the centred cosines of a *raw-cosine* pool spread (see
:mod:`mmgap_core.centered_background`), so its calibration pools are what a search gets: each
calibration query's top :data:`CENTERED_POOL` per modality from ``store.query_per_modality``,
with their embeddings. :data:`CENTERED_QUERIES` queries per query modality are enough for a
geometric mean of slopes; the index being approximate changes a pool's tail, not its spread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from ..centered_background import POOL_SIZES, CenteredBackgroundScale
from ..post_processing import default_n_directions, post_processings, top_directions
from ..store.base import VectorStore
from .store_index import MEANS_SAMPLE, other_hits

__all__ = ["CENTERED_POOL", "CENTERED_QUERIES", "fit_centered_scale", "fit_directions"]

logger = logging.getLogger(__name__)

#: Calibration queries per query modality whose pools fit the centred scale.
CENTERED_QUERIES = 200
#: Candidates per modality in each calibration pool (the largest pool size fitted).
CENTERED_POOL = max(POOL_SIZES)
#: Queries per store call (each returns up to ``CENTERED_POOL`` embeddings per modality).
_BATCH = 32


def fit_directions(
    store: VectorStore, means: Mapping[str, np.ndarray], seed: int = 0
) -> dict[str, np.ndarray]:
    """Each modality's top principal directions, from a sample of :data:`MEANS_SAMPLE` items.

    :func:`~mmgap_core.centered_background.default_n_directions` of them (of the means' width),
    around the calibration's means; the top directions of a large sample are those of the whole
    modality.
    """
    n = default_n_directions(len(next(iter(means.values()))))
    out = {}
    for m in store.modalities():
        if m in means:
            _ids, _docs, emb = store.sample_documents(m, MEANS_SAMPLE, seed)
            if emb.shape[0]:
                out[m] = top_directions(emb, means[m], n)
    return out


def fit_centered_scale(
    store: VectorStore,
    query_sets: Mapping[str, object],
    means: Mapping[str, np.ndarray],
    counts: Mapping[str, int],
    *,
    model_id: str | None = None,
    dim: int | None = None,
    seed: int = 0,
    progress: bool = False,
    directions: Mapping[str, np.ndarray] | None = None,
) -> CenteredBackgroundScale | None:
    """Fit :class:`CenteredBackgroundScale` from the store's answers to calibration queries.

    Parameters
    ----------
    store : VectorStore
    query_sets : mapping of str to QuerySet
        Calibration queries per query modality (``embeddings``, ``self_ids``); at most
        :data:`CENTERED_QUERIES` of each, drawn with ``seed``, are used.
    means : mapping of str to numpy.ndarray
        The calibration's mean embedding per modality.
    counts : mapping of str to int
        Items per modality now.
    model_id, dim : str or int or None
        What the scales are fitted for.
    seed : int, default 0
    progress : bool, default False
        Show a progress bar.
    directions : mapping of str to numpy.ndarray, optional
        Top principal directions per modality, projected out of the second view (as a search
        will); a modality without them is only centred.

    Returns
    -------
    CenteredBackgroundScale or None
        ``None`` when no query modality has a mean (nothing to centre on).
    """
    from tqdm.auto import tqdm

    out = CenteredBackgroundScale(model_id=model_id, dim=dim)
    post = post_processings(means, directions)  # each modality's constants, once
    rng = np.random.default_rng(seed)
    live = {m: int(n) for m, n in counts.items() if n > 0 and m in means}
    for qm, qs in query_sets.items():
        if qm not in means or not live:
            continue
        emb, self_ids = qs.embeddings, qs.self_ids
        pick = np.sort(rng.permutation(emb.shape[0])[:CENTERED_QUERIES])
        want = {m: min(CENTERED_POOL + (self_ids is not None), n) for m, n in live.items()}
        steps = range(0, pick.size, _BATCH)
        for s in tqdm(steps, desc=f"centred scale ({qm})", disable=not progress):
            rows = pick[s : s + _BATCH]
            hits = store.query_per_modality(emb[rows], want, include_embeddings=True)
            u = post[qm].unit_queries(emb[rows])
            pools = {}
            for m, h in hits.items():
                width = min(CENTERED_POOL, live[m])
                pool = np.full((rows.size, width), -np.inf)
                for r, row_ids in enumerate(h.ids):
                    own = None if self_ids is None else self_ids[rows[r]]
                    kept = other_hits(row_ids, own, width)
                    if kept:
                        cos = post[m].cosines(u[r : r + 1], h.embeddings[r : r + 1, kept])
                        pool[r, : len(kept)] = cos[0]
                pools[m] = pool
            out.partial_fit(pools, qm, live)
    if not out.is_fitted:
        return None
    logger.info("centred background scale fitted: %r", out)
    return out
