"""The ``background-z`` fusion method: background z-scores, one unit for every modality.

The estimator behind it is :class:`~mmgap_core.background.BackgroundScale`; see
:mod:`mmgap_core.background` for the model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .background import BackgroundScale
from .candidates import CandidateBatch
from .fusion_base import FusionMethod, Ranked, merge_row
from .stats import ModalityStandardizer

__all__ = ["MAX_ONE_QUERY_CANDIDATES", "MIN_BACKGROUND_LIST", "BackgroundZFusion"]

#: A query whose list in some modality holds fewer real scores than this has too little
#: background to locate; it is scored with the paper's global statistics instead.
MIN_BACKGROUND_LIST = 6

#: :meth:`BackgroundZFusion.fuse_one` leaves more candidates than this to numpy: measured right
#: after a store query, plain Python and numpy cost the same at about 2 x 100, numpy less beyond.
MAX_ONE_QUERY_CANDIDATES = 200


class BackgroundZFusion(FusionMethod):
    """Each candidate's background z: ``(s - mu_qm) / sigma_m``, one unit for every modality.

    ``mu_qm`` is the query's own background location in modality ``m`` (from its candidate list,
    ranks 2..k) and ``sigma_m`` the calibrated background scale; see :mod:`mmgap_core.background`.

    Parameters
    ----------
    scale : BackgroundScale
        Fitted scales for the batch's (query modality, candidate modality) keys.
    corpus_sizes : mapping of str to int, optional
        Current number of items per modality (a store's counts); defaults to the sizes at
        calibration time.
    standardizer : ModalityStandardizer, optional
        The paper's pseudo-positive statistics. A query whose list in some modality is shorter
        than :data:`MIN_BACKGROUND_LIST` (a tiny store, a narrow filter) is scored with them
        (``standardize``'s z) for every modality, as its background cannot be located. Without
        them such a query is scored by background z anyway.
    """

    name = "background-z"
    summary = "background standard deviations above the query's own typical item, per modality"
    unit = "z over the query's background"
    needs_background_scale = True
    needs_standardizer = True

    def __init__(
        self,
        scale: BackgroundScale,
        corpus_sizes: Mapping[str, int] | None = None,
        standardizer: ModalityStandardizer | None = None,
    ):
        if not isinstance(scale, BackgroundScale) or not scale.is_fitted:
            raise ValueError(f"{self.name}: the background scale is not fitted; calibrate first")
        self.scale = scale
        self.corpus_sizes = dict(corpus_sizes or {})
        self.standardizer = (
            standardizer if standardizer is not None and standardizer.is_fitted else None
        )

    def score(self, batch: CandidateBatch) -> dict[str, np.ndarray]:
        """Background z of every list; short-list queries fall back to the paper's z."""
        scores = {}
        for m, c in batch.lists.items():
            if c.ids.shape[1] < MIN_BACKGROUND_LIST or not c.is_full:
                break
            scores[m] = c.scores
        else:  # no padding and no short list (a search's lists): nothing to mask or fall back on
            out = self.scale.transform_full(scores, batch.query_modality, self.corpus_sizes)
            if out is not None:
                return out
        out = {}
        short = np.zeros(batch.n_queries, dtype=bool)
        for m, c in batch.lists.items():
            lists = np.where(c.valid, c.scores, -np.inf)
            short |= c.valid.sum(axis=1) < MIN_BACKGROUND_LIST
            out[m] = self.scale.transform(
                lists, m, batch.query_modality, n_items=self.corpus_sizes.get(m)
            )
        if self.standardizer is not None and short.any():
            for m, c in batch.lists.items():
                z = self.standardizer.transform(c.scores[short], m, batch.query_modality)
                out[m][short] = np.where(c.valid[short], z, -np.inf)
        return out

    def fuse_one(
        self, scores: Mapping[str, list[float]], query_modality: str, k: int, **_unused
    ) -> Ranked | None:
        """:meth:`fuse` of one query's full lists, bit for bit, in plain Python (or ``None``).

        See :meth:`BackgroundScale.transform_row` and :func:`merge_row`; anything unusual (a short
        list, padding, a tie across modalities) is left to :meth:`fuse`, and so are more than
        :data:`MAX_ONE_QUERY_CANDIDATES` candidates, where numpy is the faster.
        """
        lengths = [len(s) for s in scores.values()]
        if min(lengths, default=0) < MIN_BACKGROUND_LIST or sum(lengths) > MAX_ONE_QUERY_CANDIDATES:
            return None
        z = self.scale.transform_row(scores, query_modality, self.corpus_sizes)
        return None if z is None else merge_row(z, k)
