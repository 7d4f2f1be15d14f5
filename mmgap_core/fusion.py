"""Fusion: merge per-modality candidate lists into one ranked list, behind one small interface.

Input is a :class:`CandidateBatch` (for each modality, each query's candidates with raw cosine scores);
output is a :class:`FusedRanking` (one merged list per query, with a score per item).
Methods are looked up by the names the CLI uses: see :data:`METHOD_NAMES` and :func:`make_method`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .stats import ModalityStandardizer

METHOD_NAMES = (
    "raw",
    "standardize",
    "standardize-gold",
    "zscore-per-query",
    "minmax",
    "rrf",
    "center",
)


@dataclass
class ModalityCandidates:
    """One modality's candidates for a batch of queries: ``ids [Q, k]`` (-1 = no candidate) and
    ``scores [Q, k]`` raw cosines, best first within each row."""

    ids: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.ids.ndim != 2 or self.ids.shape != self.scores.shape:
            raise ValueError(
                f"candidate ids {self.ids.shape} and scores {self.scores.shape} must both be [Q, k]"
            )
        valid = self.ids >= 0
        if not np.isfinite(self.scores[valid]).all():
            raise ValueError("candidate scores contain NaN or inf")

    @property
    def valid(self) -> np.ndarray:
        return self.ids >= 0


@dataclass
class CandidateBatch:
    """Per-modality candidate lists for Q queries of one query modality.

    ``query_embeddings`` and ``candidate_embeddings`` (``(modality, ids [Q, k]) -> [Q, k, d]``) are only
    needed by methods that re-score in embedding space (``center``).
    """

    query_modality: str
    lists: dict[str, ModalityCandidates]
    query_embeddings: np.ndarray | None = None
    candidate_embeddings: Callable[[str, np.ndarray], np.ndarray] | None = None

    def __post_init__(self):
        if not self.lists:
            raise ValueError("no candidate lists to fuse")
        n_q = {c.ids.shape[0] for c in self.lists.values()}
        if len(n_q) != 1:
            raise ValueError(f"candidate lists disagree on the number of queries: {sorted(n_q)}")

    @property
    def n_queries(self) -> int:
        return next(iter(self.lists.values())).ids.shape[0]

    @property
    def modalities(self) -> list[str]:
        return list(self.lists)


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


def merge_scored(
    batch: CandidateBatch, scores: Mapping[str, np.ndarray], k: int | None
) -> FusedRanking:
    """Merge per-modality re-scored lists into one top-k list per query (ties keep modality order)."""
    mods = batch.modalities
    ids = np.concatenate([batch.lists[m].ids for m in mods], axis=1)
    sc = np.concatenate(
        [np.where(batch.lists[m].valid, scores[m], -np.inf) for m in mods], axis=1
    ).astype(np.float64)
    codes = np.concatenate(
        [np.full(batch.lists[m].ids.shape, j, dtype=np.int64) for j, m in enumerate(mods)], axis=1
    )
    total = ids.shape[1]
    if k is not None and (
        isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1
    ):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    k = total if k is None else min(int(k), total)
    order = np.argsort(-sc, axis=1, kind="stable")[:, :k]
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_sc = np.take_along_axis(sc, order, axis=1)
    out_codes = np.take_along_axis(codes, order, axis=1)
    pad = ~np.isfinite(out_sc) | (out_ids < 0)
    out_ids[pad], out_sc[pad], out_codes[pad] = -1, -np.inf, -1
    return FusedRanking(out_ids, out_sc, out_codes, list(mods))


class FusionMethod(ABC):
    """One way of putting scores of different modalities on one scale."""

    name: str = ""

    @abstractmethod
    def score(self, batch: CandidateBatch) -> dict[str, np.ndarray]:
        """Comparable scores ``[Q, k]`` for each modality's list."""

    def fuse(self, batch: CandidateBatch, k: int | None = None) -> FusedRanking:
        return merge_scored(batch, self.score(batch), k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class RawFusion(FusionMethod):
    """Plain cosine merge: what LangChain/Chroma do; the modality gap decides the ranking."""

    name = "raw"

    def score(self, batch):
        return {m: c.scores for m, c in batch.lists.items()}


class StandardizeFusion(FusionMethod):
    """The paper's method: ``z = (s - mu_m) / sigma_m`` with statistics fitted beforehand."""

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


class ZScorePerQueryFusion(FusionMethod):
    """Each list z-scored by its own scores (per query). A list with no spread gets std 1."""

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

    name = "minmax"

    def score(self, batch):
        out = {}
        for m, c in batch.lists.items():
            # `initial` makes a 0-wide list (a modality that returned nothing) a no-op, not an error.
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

    name = "center"

    def __init__(self, means: Mapping[str, np.ndarray]):
        if not means:
            raise ValueError("center: no modality means given")
        self.means = {m: np.asarray(v, dtype=np.float64) for m, v in means.items()}

    @classmethod
    def fit(
        cls, embeddings, modalities, extra: Mapping[str, np.ndarray] | None = None
    ) -> CenterFusion:
        """Mean embedding per modality label; ``extra`` adds means fitted elsewhere (e.g. of queries)."""
        from ._validation import as_embeddings, as_labels

        x = as_embeddings(embeddings, "embeddings")
        labels = as_labels(modalities, "modalities", x.shape[0])
        means = {str(m): x[labels == m].mean(axis=0, dtype=np.float64) for m in np.unique(labels)}
        means.update(extra or {})
        return cls(means)

    def _mean(self, modality: str) -> np.ndarray:
        if modality not in self.means:
            raise ValueError(
                f"center: no mean embedding for modality {modality!r}; have {sorted(self.means)}"
            )
        return self.means[modality]

    def score(self, batch):
        if batch.query_embeddings is None or batch.candidate_embeddings is None:
            raise ValueError("center needs query embeddings and a candidate embedding lookup")
        q = np.asarray(batch.query_embeddings, dtype=np.float64)
        if q.ndim != 2 or q.shape[0] != batch.n_queries:
            raise ValueError(
                f"center: query embeddings have shape {q.shape}, expected [{batch.n_queries}, dim]"
            )
        for m in [batch.query_modality, *batch.lists]:
            if self._mean(m).shape != (q.shape[1],):
                raise ValueError(
                    f"center: mean of {m!r} has shape {self._mean(m).shape}, queries have "
                    f"dimension {q.shape[1]}"
                )
        q = q - self._mean(batch.query_modality)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        out = {}
        for m, c in batch.lists.items():
            emb = np.asarray(batch.candidate_embeddings(m, c.ids), dtype=np.float64) - self._mean(m)
            emb /= np.maximum(np.linalg.norm(emb, axis=2, keepdims=True), 1e-12)
            out[m] = np.where(c.valid, np.einsum("qd,qkd->qk", q, emb), -np.inf)
        return out


def make_method(
    name: str,
    *,
    standardizer: ModalityStandardizer | None = None,
    gold_standardizer: ModalityStandardizer | None = None,
    center_means: Mapping[str, np.ndarray] | None = None,
    rrf_k: int = 60,
) -> FusionMethod:
    """Build a fusion method by its CLI name, with what it needs."""
    if name == "raw":
        return RawFusion()
    if name == "standardize":
        if standardizer is None:
            raise ValueError(
                "standardize needs fitted pseudo-positive statistics (calibrate first)"
            )
        return StandardizeFusion(standardizer, "standardize")
    if name == "standardize-gold":
        if gold_standardizer is None:
            raise ValueError("standardize-gold needs statistics fitted from labelled pairs (qrels)")
        return StandardizeFusion(gold_standardizer, "standardize-gold")
    if name == "zscore-per-query":
        return ZScorePerQueryFusion()
    if name == "minmax":
        return MinMaxFusion()
    if name == "rrf":
        return RRFFusion(rrf_k)
    if name == "center":
        if center_means is None:
            raise ValueError("center needs per-modality mean embeddings")
        return CenterFusion(center_means)
    raise ValueError(f"unknown fusion method {name!r}; choose from {', '.join(METHOD_NAMES)}")


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
