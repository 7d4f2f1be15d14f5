"""The ``two-view-z`` fusion method (the default): the mean of two background z-scores.

One is ``background-z``'s, on the raw cosine; the other is the same kind of z on the cosine after
removing each modality's mean embedding and top principal directions ("all-but-the-top"). The two
views measure the same match with partly independent noise, so the mean of their z keeps a
relevant item high (it stands out in both) and pulls back an unrelated item that tops one view by
chance. See :mod:`mmgap_core.centered_background` for the second view.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .background import BackgroundScale
from .candidates import CandidateBatch
from .centered_background import CenteredBackgroundScale
from .fusion_background import MAX_ONE_QUERY_CANDIDATES, MIN_BACKGROUND_LIST, BackgroundZFusion
from .fusion_base import FusionMethod, Ranked, merge_stacked
from .post_processing import batch_centered_cosines, post_processings
from .slope_fit import split_stacked
from .stats import ModalityStandardizer

__all__ = ["TwoViewZFusion"]


class TwoViewZFusion(FusionMethod):
    """``(z_raw + z_post) / 2`` per candidate, one unit for every modality.

    ``z_raw`` is :class:`~mmgap_core.fusion_background.BackgroundZFusion`'s score; ``z_post`` is
    the background z of the candidate's post-processed cosine (means and top principal directions
    removed) among its modality's pool. Needs the candidates' embeddings, so a search asks the
    store for them.

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
    directions : mapping of str to numpy.ndarray, optional
        ``[D, d]`` top principal directions per modality, projected out of the second view
        (:func:`~mmgap_core.centered_background.top_directions`); a modality without them is
        only centred.
    """

    name = "two-view-z"
    summary = (
        "default: mean of the background z of the raw cosine and of the cosine with each "
        "modality's mean and top principal directions removed"
    )
    unit = "z over the query's background (mean of two views)"
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
        directions: Mapping[str, np.ndarray] | None = None,
    ):
        if not isinstance(centered_scale, CenteredBackgroundScale) or not centered_scale.is_fitted:
            raise ValueError(f"{self.name}: the centred background scale is not fitted; calibrate")
        self.raw = BackgroundZFusion(scale, corpus_sizes, standardizer)
        if not means:
            raise ValueError(f"{self.name}: no modality means given")
        self.means = {m: np.asarray(v, dtype=np.float64) for m, v in means.items()}
        self.directions = {
            m: np.asarray(v, dtype=np.float64) for m, v in (directions or {}).items()
        }
        self.centered_scale = centered_scale
        self.post = post_processings(self.means, self.directions)
        self.corpus_sizes = dict(corpus_sizes or {})

    def score(self, batch: CandidateBatch) -> dict[str, np.ndarray]:
        """Mean of the raw and post-processed background z, per modality.

        A query with a list shorter than :data:`MIN_BACKGROUND_LIST` keeps the raw view's score
        (``background-z``'s, fallback included), and so does a modality with no second-view scale
        (its calibration pools were too short to fit one). Each modality's scores depend only on
        its own list, so a search limited to some modalities ranks them as the full search does.
        """
        qm = batch.query_modality
        if all(c.is_full and c.ids.shape[1] >= MIN_BACKGROUND_LIST for c in batch.lists.values()):
            if batch.query_embeddings is not None and batch.candidate_embeddings is not None:
                lists = {m: c.scores for m, c in batch.lists.items()}
                embs = {m: batch.candidate_embeddings(m, c.ids) for m, c in batch.lists.items()}
                q = np.asarray(batch.query_embeddings, dtype=np.float64)
                # A query matrix of the wrong shape: the general path says so.
                ok = q.ndim == 2 and q.shape[0] == batch.n_queries
                z = self._stacked_scores(lists, q, embs, qm) if ok else None
                if z is not None:  # a search's lists: one set of numpy calls
                    return split_stacked(z, list(lists))
        z_raw = self.raw.score(batch)
        both = [m for m in batch.lists if self.centered_scale.has_scale(m, qm)]
        short = np.zeros(batch.n_queries, dtype=bool)
        for c in batch.lists.values():
            short |= c.valid.sum(axis=1) < MIN_BACKGROUND_LIST
        if short.all() or not both:
            return z_raw
        centred = batch_centered_cosines(
            batch, self.means, self.name, self.directions, processing=self.post
        )
        n = self.corpus_sizes
        rows = np.flatnonzero(~short)
        out = dict(z_raw)
        for m in both:
            c = batch.lists[m]
            z_c = self.centered_scale.transform(centred[m][rows], m, qm, n_items=n.get(m))
            with np.errstate(invalid="ignore"):
                mean = np.where(c.valid[rows], 0.5 * (z_raw[m][rows] + z_c), -np.inf)
            out[m] = z_raw[m].copy()
            out[m][rows] = mean
        return out

    def _stacked_scores(self, lists, queries, embeddings, qm: str) -> np.ndarray | None:
        """Both views of full, equally wide lists, as one ``[M * Q, k]`` array (key after key).

        ``None`` where that does not apply (the general path of :meth:`score` decides, errors
        included): a key without a scale in either view, a modality without a post-processing
        of the queries' width, padding, NaN or unsorted scores.
        """
        z_raw = self.raw.scale.transform_stacked(lists, qm, self.corpus_sizes)
        post = self.post
        d = queries.shape[1]
        if z_raw is None or any(m not in post or post[m].dim != d for m in (qm, *lists)):
            return None
        u = post[qm].unit_queries(queries)
        centred = {m: post[m].cosines(u, embeddings[m]) for m in lists}
        z_c = self.centered_scale.transform_stacked(centred, qm, self.corpus_sizes)
        if z_c is None:
            return None
        return 0.5 * (z_raw + z_c)

    def fuse_one(
        self,
        scores: Mapping[str, list[float]],
        query_modality: str,
        k: int,
        *,
        query: np.ndarray | None = None,
        embeddings: Mapping[str, np.ndarray] | None = None,
    ) -> Ranked | None:
        """:meth:`fuse` of one query's full lists, bit for bit, in one set of numpy calls.

        Both views of every modality are computed stacked (:meth:`_stacked_scores`, which
        :meth:`score` runs on a search's lists too) and merged by
        :func:`~mmgap_core.fusion_base.merge_stacked`. Anything unusual (a short, padded or
        unequal list, a modality without a second-view scale, a tie across modalities) is left
        to :meth:`fuse`.
        """
        if query is None or embeddings is None or set(embeddings) != set(scores):
            return None
        lengths = [len(s) for s in scores.values()]
        if min(lengths, default=0) < MIN_BACKGROUND_LIST or sum(lengths) > MAX_ONE_QUERY_CANDIDATES:
            return None
        if query.ndim != 1 or any(
            e.ndim != 2 or e.shape[1] != query.size for e in embeddings.values()
        ):
            return None
        lists = {m: np.array([s], dtype=np.float64) for m, s in scores.items()}
        embs = {m: embeddings[m][None] for m in scores}
        query = np.asarray(query, dtype=np.float64)[None, :]
        z = self._stacked_scores(lists, query, embs, query_modality)
        return None if z is None else merge_stacked(z, k)
