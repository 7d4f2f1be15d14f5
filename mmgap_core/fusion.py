"""Fusion: merge per-modality candidate lists into one ranked list, behind one small interface.

Input is a :class:`CandidateBatch` (for each modality, each query's candidates with raw cosine
scores); output is a :class:`FusedRanking` (one merged list per query, with a score per item).
Methods are looked up by the names the CLI uses: see :data:`METHOD_NAMES` and :func:`make_method`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .background import BackgroundScale
from .centered_background import CenteredBackgroundScale
from .fusion_background import BackgroundZFusion
from .fusion_two_view import TwoViewZFusion
from .post_processing import batch_centered_cosines
from .candidates import CandidateBatch, ModalityCandidates  # noqa: F401 - re-exported
from .fusion_base import FusedRanking, FusionMethod, merge_scored, tie_break_keys  # noqa: F401
from .stats import ModalityStandardizer

METHOD_NAMES = (
    "raw",
    "standardize",
    "standardize-gold",
    "zscore-per-query",
    "minmax",
    "rrf",
    "center",
    "background-z",
    "two-view-z",
)

DEFAULT_METHOD = "two-view-z"


class RawFusion(FusionMethod):
    """Plain cosine merge: what LangChain/Chroma do; the modality gap decides the ranking."""

    summary = "plain cosine merge (what LangChain and Chroma do); the modality gap decides"
    unit = "cosine"

    name = "raw"

    def score(self, batch):
        return {m: c.scores for m, c in batch.lists.items()}


class StandardizeFusion(FusionMethod):
    """The paper's method: ``z = (s - mu_m) / sigma_m`` with statistics fitted beforehand."""

    summary = "the paper's method: (s - mu_m) / sigma_m of the pseudo-positive scores"
    unit = "z over the pseudo-positives"

    needs_standardizer = True

    def __init__(self, standardizer: ModalityStandardizer, name: str = "standardize"):
        if not standardizer.is_fitted:
            raise ValueError(f"{name}: the standardizer is not fitted; calibrate first")
        self.standardizer = standardizer
        self.name = name

    def score(self, batch):
        return {
            m: self.standardizer.transform(c.scores, m, batch.query_modality)
            for m, c in batch.lists.items()
        }


class GoldStandardizeFusion(StandardizeFusion):
    """:class:`StandardizeFusion` with statistics of labelled pairs (evaluation only)."""

    summary = "standardize with statistics of labelled pairs (evaluation only)"
    unit = "z over the labelled positives"

    needs_standardizer = False
    needs_gold_standardizer = True

    def __init__(self, standardizer: ModalityStandardizer, name: str = "standardize-gold"):
        super().__init__(standardizer, name)


class ZScorePerQueryFusion(FusionMethod):
    """Each list z-scored by its own scores (per query). A list with no spread gets std 1."""

    summary = "each modality's list z-scored by its own mean and std, per query"
    unit = "z within the list"

    name = "zscore-per-query"

    def score(self, batch):
        out = {}
        for m, c in batch.lists.items():
            # Masked sums, not nanmean: no "empty slice" warnings for empty rows or 0-wide lists.
            n = np.maximum(c.valid.sum(axis=1, keepdims=True), 1)
            mean = np.where(c.valid, c.scores, 0.0).sum(axis=1, keepdims=True) / n
            dev = np.where(c.valid, c.scores - mean, 0.0)
            std = np.sqrt((dev * dev).sum(axis=1, keepdims=True) / n)
            std = np.where(std > 1e-12, std, 1.0)
            out[m] = np.where(c.valid, dev / std, -np.inf)
        return out


class MinMaxFusion(FusionMethod):
    """Min-max per list (per query) into [0, 1]; a list with no spread scores 1."""

    summary = "each modality's list scaled to [0, 1], per query"
    unit = "0-1 within the list"

    name = "minmax"

    def score(self, batch):
        out = {}
        for m, c in batch.lists.items():
            # `initial` makes a 0-wide list (a modality that returned nothing) a no-op.
            lo = np.where(c.valid, c.scores, np.inf).min(axis=1, keepdims=True, initial=np.inf)
            hi = np.where(c.valid, c.scores, -np.inf).max(axis=1, keepdims=True, initial=-np.inf)
            spread = hi - lo > 1e-12  # False for rows with no valid item (-inf - inf)
            safe_lo = np.where(spread, lo, 0.0)
            span = np.where(spread, hi - safe_lo, 1.0)
            scaled = np.where(spread, (np.where(c.valid, c.scores, 0.0) - safe_lo) / span, 1.0)
            out[m] = np.where(c.valid, scaled, -np.inf)
        return out


class RRFFusion(FusionMethod):
    """Reciprocal rank fusion: ``1 / (k + rank)`` with rank 1-based within each modality's list."""

    summary = "reciprocal rank fusion: 1 / (60 + rank within the modality)"
    unit = "1 / (60 + rank)"

    name = "rrf"

    def __init__(self, k: int = 60):
        if k < 0:
            raise ValueError(f"rrf k must be >= 0, got {k}")
        self.k = k

    def score(self, batch):
        out = {}
        for m, c in batch.lists.items():
            # Lists arrive best first, but sort anyway so the rank is by score.
            order = np.argsort(-np.where(c.valid, c.scores, -np.inf), axis=1, kind="stable")
            ranks = np.empty_like(order)
            np.put_along_axis(ranks, order, np.arange(1, order.shape[1] + 1)[None, :], axis=1)
            out[m] = np.where(c.valid, 1.0 / (self.k + ranks), -np.inf)
        return out


class CenterFusion(FusionMethod):
    """Subtract each modality's mean embedding and renormalise (GR-CLIP / I0T-post), then cosine.

    Re-scores the given candidates only, so retrieve a generous pool per modality. Needs
    ``batch.query_embeddings`` and ``batch.candidate_embeddings``.
    """

    summary = "GR-CLIP: subtract each modality's mean embedding, then cosine"
    unit = "cosine after centering"

    name = "center"
    needs_center_means = True
    needs_candidate_embeddings = True

    def __init__(self, means: Mapping[str, np.ndarray]):
        if not means:
            raise ValueError("center: no modality means given")
        self.means = {m: np.asarray(v, dtype=np.float64) for m, v in means.items()}

    @classmethod
    def fit(
        cls, embeddings, modalities, extra: Mapping[str, np.ndarray] | None = None
    ) -> CenterFusion:
        """Mean embedding per modality label; ``extra`` adds means fitted elsewhere (queries')."""
        from ._validation import as_embeddings, as_labels

        x = as_embeddings(embeddings, "embeddings")
        labels = as_labels(modalities, "modalities", x.shape[0])
        means = {str(m): x[labels == m].mean(axis=0, dtype=np.float64) for m in np.unique(labels)}
        means.update(extra or {})
        return cls(means)

    def score(self, batch):
        return batch_centered_cosines(batch, self.means, self.name)


METHODS: dict[str, type[FusionMethod]] = {
    "raw": RawFusion,
    "standardize": StandardizeFusion,
    "standardize-gold": GoldStandardizeFusion,
    "zscore-per-query": ZScorePerQueryFusion,
    "minmax": MinMaxFusion,
    "rrf": RRFFusion,
    "center": CenterFusion,
    "background-z": BackgroundZFusion,
    "two-view-z": TwoViewZFusion,
}


def method_help() -> str:
    """One line per fusion method (name, what it does), the default marked; for ``--help``."""
    width = max(len(n) for n in METHOD_NAMES)
    return "\n".join(f"{n:<{width}}  {METHODS[n].summary}" for n in METHOD_NAMES)


def method_class(name: str) -> type[FusionMethod]:
    """The class of the fusion method called ``name``, to read what it needs before building it.

    Parameters
    ----------
    name : str
        One of :data:`METHOD_NAMES`.

    Returns
    -------
    type
        A :class:`FusionMethod` subclass; its ``needs_*`` attributes say what it needs.

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    cls = METHODS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown fusion method {name!r}; choose from {', '.join(METHOD_NAMES)}")
    return cls


def check_search_method(name: str) -> str:
    """``name`` when it is a fusion method a search can use, i.e. one that needs no labelled pairs.

    Parameters
    ----------
    name : str
        A fusion method name, as a retriever or search option gives it.

    Returns
    -------
    str
        ``name`` itself.

    Raises
    ------
    ValueError
        For an unknown name (listing the known ones), or a method that exists for
        ``mmgap eval`` only.
    """
    if method_class(name).needs_gold_standardizer:
        raise ValueError(f"method {name!r} needs labelled pairs: it exists for `mmgap eval` only")
    return name


def make_method(
    name: str,
    *,
    standardizer: ModalityStandardizer | None = None,
    gold_standardizer: ModalityStandardizer | None = None,
    center_means: Mapping[str, np.ndarray] | None = None,
    background_scale: BackgroundScale | None = None,
    corpus_sizes: Mapping[str, int] | None = None,
    rrf_k: int = 60,
    centered_scale: CenteredBackgroundScale | None = None,
    center_directions: Mapping[str, np.ndarray] | None = None,
) -> FusionMethod:
    """Build a fusion method by its CLI name, with what it needs.

    Parameters
    ----------
    name : str
        One of :data:`METHOD_NAMES`.
    standardizer : ModalityStandardizer, optional
        Pseudo-positive statistics, for methods with ``needs_standardizer``.
    gold_standardizer : ModalityStandardizer, optional
        Statistics of labelled pairs, for methods with ``needs_gold_standardizer``.
    center_means : mapping of str to numpy.ndarray, optional
        Mean embedding per modality, for methods with ``needs_center_means``.
    background_scale : BackgroundScale, optional
        Background scales fitted by calibration, for methods with ``needs_background_scale``.
    corpus_sizes : mapping of str to int, optional
        Current items per modality (``background-z`` reads its background against them).
    rrf_k : int, default 60
        The constant of reciprocal rank fusion.
    centered_scale : CenteredBackgroundScale, optional
        Scales of centred-cosine pools fitted by calibration, for methods with
        ``needs_centered_scale``.
    center_directions : mapping of str to numpy.ndarray, optional
        Top principal directions per modality (``[D, d]``), projected out of the second view of
        methods with ``needs_centered_scale``; ``None``: centring only.

    Returns
    -------
    FusionMethod

    Raises
    ------
    ValueError
        For an unknown name, or when what the method needs is not given.
    """
    cls = method_class(name)
    if cls.needs_standardizer and standardizer is None:
        raise ValueError(f"{name} needs fitted pseudo-positive statistics (calibrate first)")
    if cls.needs_gold_standardizer and gold_standardizer is None:
        raise ValueError(f"{name} needs statistics fitted from labelled pairs (qrels)")
    if cls.needs_center_means and center_means is None:
        raise ValueError(f"{name} needs per-modality mean embeddings")
    if cls.needs_background_scale and background_scale is None:
        raise ValueError(f"{name} needs background scales fitted by calibration (calibrate first)")
    if cls.needs_centered_scale and centered_scale is None:
        raise ValueError(f"{name} needs centred background scales fitted by calibration")
    if cls is StandardizeFusion:
        return StandardizeFusion(standardizer, name)
    if cls is GoldStandardizeFusion:
        return GoldStandardizeFusion(gold_standardizer, name)
    if cls is RRFFusion:
        return RRFFusion(rrf_k)
    if cls is CenterFusion:
        return CenterFusion(center_means)
    if cls is BackgroundZFusion:
        return BackgroundZFusion(background_scale, corpus_sizes, standardizer)
    if cls is TwoViewZFusion:
        return TwoViewZFusion(
            background_scale,
            centered_scale,
            center_means,
            corpus_sizes,
            standardizer,
            center_directions,
        )
    return cls()


def parse_methods(spec: str | None) -> list[str]:
    """Comma-separated method names (None or 'all' = every method), validated."""
    if spec is None or spec.strip() in ("", "all"):
        return list(METHOD_NAMES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(
            f"no fusion method named in {spec!r}; choose from {', '.join(METHOD_NAMES)}"
        )
    for n in names:
        if n not in METHOD_NAMES:
            raise ValueError(f"unknown fusion method {n!r}; choose from {', '.join(METHOD_NAMES)}")
    return list(dict.fromkeys(names))
