"""GR-CLIP's mean subtraction with a separate mean for query-style text: :class:`GRClipFusion`.

GR-CLIP (Li et al. 2025, "Closing the Modality Gap for Mixed Modality Search"; github.com/
yuhui-zh15/MixedModalitySearch, ``src/retrieval_mixbench.py``) subtracts three means before the
cosine: ``qry_text_mean`` from the queries, ``doc_text_mean`` from corpus texts,
``doc_image_mean`` from corpus images, and ``alpha * doc_text_mean + (1 - alpha) *
doc_image_mean`` from the un-normalised ``alpha * t + (1 - alpha) * v`` of a multimodal document;
each vector is renormalised after the subtraction. :class:`~mmgap_core.fusion.CenterFusion`
subtracts one mean per modality, so text queries share the corpus texts' mean whenever texts are
in the corpus; this method keeps the query mean apart, as GR-CLIP does.

Differences from GR-CLIP, on purpose:

* The means are fitted on the data at hand (transductive: the evaluation queries, each corpus
  kind), not on the four datasets' training sets (which are not available offline).
* A multimodal document is stored normalised, so its mean is the mean of the stored documents: for
  ``u = alpha * t + (1 - alpha) * v`` of nearly constant norm, ``normalise(u - mean(u))`` equals
  ``normalise(u / |u| - mean(u / |u|))`` up to that norm's spread.

The method is not registered in :data:`mmgap_core.fusion.METHODS`; ``mmgap reproduce`` scores it
itself (:mod:`mmgap_core.reproduce.local_methods`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from .candidates import CandidateBatch
from .post_processing import batch_centered_cosines
from .fusion_base import FusionMethod  # not .fusion: lets fusion.py import this module

__all__ = ["GRCLIP_METHOD", "GRClipFusion"]

logger = logging.getLogger(__name__)

GRCLIP_METHOD = "grclip"


class GRClipFusion(FusionMethod):
    """Subtract a query mean from queries and a per-kind mean from candidates, renormalise, cosine.

    Re-scores the given candidates only, so retrieve a generous pool per modality. Needs
    ``batch.query_embeddings`` and ``batch.candidate_embeddings``.

    Parameters
    ----------
    means : mapping of str to numpy.ndarray
        Mean embedding of each candidate modality (corpus kind), ``[d]`` each.
    query_mean : numpy.ndarray
        Mean embedding of the queries (GR-CLIP's ``qry_text_mean``), ``[d]``.
    name : str, default "grclip"
        The name reported with the results.

    Attributes
    ----------
    needs_center_means : bool
        True: each candidate modality's mean embedding (fitted like ``center``'s).
    needs_query_mean : bool
        True: the mean embedding of the queries, apart from any corpus mean.
    needs_candidate_embeddings : bool
        True: re-scores in embedding space.
    """

    name = GRCLIP_METHOD
    needs_center_means = True
    needs_query_mean = True
    needs_candidate_embeddings = True

    def __init__(
        self, means: Mapping[str, np.ndarray], query_mean: np.ndarray, name: str = GRCLIP_METHOD
    ):
        if not means:
            raise ValueError(f"{name}: no modality means given")
        self.means = {str(m): np.asarray(v, dtype=np.float64) for m, v in means.items()}
        self.query_mean = np.asarray(query_mean, dtype=np.float64)
        dims = {v.shape for v in self.means.values()} | {self.query_mean.shape}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ValueError(f"{name}: means must be vectors of one dimension, got {sorted(dims)}")
        self.name = name

    @classmethod
    def fit(cls, queries, corpus, modalities, name: str = GRCLIP_METHOD) -> GRClipFusion:
        """Fit the means on the data at hand: the queries, and each corpus kind.

        Parameters
        ----------
        queries : array_like
            ``[Q, d]`` query embeddings (unit rows).
        corpus : array_like
            ``[N, d]`` corpus embeddings.
        modalities : array_like of str
            ``[N]`` the kind of each corpus row.
        name : str, default "grclip"
            The method's name.

        Returns
        -------
        GRClipFusion
        """
        from ._validation import as_embeddings, as_labels

        x = as_embeddings(corpus, "corpus")
        q = as_embeddings(queries, "queries", dim=x.shape[1])
        labels = as_labels(modalities, "modalities", x.shape[0])
        means = {str(m): x[labels == m].mean(axis=0, dtype=np.float64) for m in np.unique(labels)}
        return cls(means, q.mean(axis=0, dtype=np.float64), name)

    def score(self, batch: CandidateBatch) -> dict[str, np.ndarray]:
        """Cosines between mean-subtracted, renormalised queries and candidates.

        Parameters
        ----------
        batch : CandidateBatch
            With ``query_embeddings`` and ``candidate_embeddings``.

        Returns
        -------
        dict of str to numpy.ndarray
            ``[Q, k]`` scores per candidate modality; ``-inf`` where there is no candidate.

        Raises
        ------
        ValueError
            Missing embeddings, a modality without a mean, or a dimension mismatch.
        """
        return batch_centered_cosines(batch, self.means, self.name, query_mean=self.query_mean)
