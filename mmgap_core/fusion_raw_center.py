"""The ``raw-center-z`` fusion method: the mean of two background z-scores of each candidate.

One is ``background-z``'s, on the raw cosine; the other is the same kind of z on the cosine after
subtracting each modality's mean embedding (``center``'s cosine). The two views measure the same
match with partly independent noise, so the mean of their z keeps a relevant item high (it stands
out in both) and pulls back an unrelated item that tops one view by chance. See
:mod:`mmgap_core.centered_background` for the second view's scale.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .background import BackgroundScale
from .candidates import CandidateBatch
from .centered_background import CenteredBackgroundScale, batch_centered_cosines
from .fusion_background import MIN_BACKGROUND_LIST, BackgroundZFusion
from .fusion_base import FusionMethod
from .stats import ModalityStandardizer

__all__ = ["RawCenterZFusion"]


class RawCenterZFusion(FusionMethod):
    """``(z_raw + z_centred) / 2`` per candidate, one unit for every modality.

    ``z_raw`` is :class:`~mmgap_core.fusion_background.BackgroundZFusion`'s score; ``z_centred``
    is the background z of the candidate's centred cosine among its modality's pool. Needs the
    candidates' embeddings, so a search asks the store for them.

    Parameters
    ----------
    scale : BackgroundScale
        Fitted background scales of the raw cosines.
    centered_scale : CenteredBackgroundScale
        Fitted scales of the centred cosines, per pool size.
    means : mapping of str to numpy.ndarray
        Mean embedding per modality (the calibration's ``center`` means).
    corpus_sizes : mapping of str to int, optional
        Current items per modality; defaults to the sizes at calibration time.
    standardizer : ModalityStandardizer, optional
        For queries whose list in some modality is shorter than
        :data:`~mmgap_core.fusion_background.MIN_BACKGROUND_LIST`: they are scored as
        ``background-z`` scores them (its fallback included), as a pool that short has no
        background to locate.
    """

    name = "raw-center-z"
    summary = "mean of the background z of the raw cosine and of the mean-centred cosine"
    unit = "z over the query's background (mean of the raw and centred views)"
    needs_background_scale = True
    needs_centered_scale = True
    needs_standardizer = True
    needs_center_means = True
    needs_candidate_embeddings = True

    def __init__(
        self,
        scale: BackgroundScale,
        centered_scale: CenteredBackgroundScale,
        means: Mapping[str, np.ndarray],
        corpus_sizes: Mapping[str, int] | None = None,
        standardizer: ModalityStandardizer | None = None,
    ):
        if not isinstance(centered_scale, CenteredBackgroundScale) or not centered_scale.is_fitted:
            raise ValueError(f"{self.name}: the centred background scale is not fitted; calibrate")
        self.raw = BackgroundZFusion(scale, corpus_sizes, standardizer)
        if not means:
            raise ValueError(f"{self.name}: no modality means given")
        self.means = {m: np.asarray(v, dtype=np.float64) for m, v in means.items()}
        self.centered_scale = centered_scale
        self.corpus_sizes = dict(corpus_sizes or {})

    def _mean(self, modality: str) -> np.ndarray:
        if modality not in self.means:
            raise ValueError(
                f"{self.name}: no mean embedding for modality {modality!r}; "
                f"have {sorted(self.means)}"
            )
        return self.means[modality]

    def score(self, batch: CandidateBatch) -> dict[str, np.ndarray]:
        """Mean of the raw and centred background z.

        A query with a list shorter than :data:`MIN_BACKGROUND_LIST` keeps the raw view's score,
        and so does every query when a modality has no centred scale (its calibration pools were
        too short to fit one): both views must cover all modalities for the mean to be one unit.
        """
        z_raw = self.raw.score(batch)
        qm = batch.query_modality
        if not all(self.centered_scale.has_scale(m, qm) for m in batch.lists):
            return z_raw
        short = np.zeros(batch.n_queries, dtype=bool)
        for c in batch.lists.values():
            short |= c.valid.sum(axis=1) < MIN_BACKGROUND_LIST
        if short.all():
            return z_raw
        centred = batch_centered_cosines(batch, self._mean, self.name)
        n = self.corpus_sizes
        if not short.any() and all(c.is_full for c in batch.lists.values()):  # a search's lists
            return {
                m: 0.5 * (z_raw[m] + self.centered_scale.transform(cos, m, qm, n_items=n.get(m)))
                for m, cos in centred.items()
            }
        rows = np.flatnonzero(~short)
        out = {}
        for m, c in batch.lists.items():
            z_c = self.centered_scale.transform(
                centred[m][rows], m, qm, n_items=self.corpus_sizes.get(m)
            )
            with np.errstate(invalid="ignore"):
                mean = np.where(c.valid[rows], 0.5 * (z_raw[m][rows] + z_c), -np.inf)
            out[m] = z_raw[m].copy()
            out[m][rows] = mean
        return out
