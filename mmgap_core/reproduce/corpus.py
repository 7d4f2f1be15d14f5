"""The embedded corpus of one ``mmgap reproduce`` run: :class:`Corpus`, and multimodal documents.

A corpus stacks the vectors of every kind (passages, images and, for MixBench, multimodal
documents) with a kind label per row, and maps each item id to its row, so questions' gold items and
pools become row numbers. :func:`fuse_documents` builds a multimodal document's vector from its
text and image vectors: ``normalise(alpha * t + (1 - alpha) * v)`` of the normalised ``t`` and
``v`` (GR-CLIP's mixing, alpha 0.5 by default).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..datasets.base import BenchmarkQuery
from ..metrics import Qrels
from .cache import Embedded

__all__ = ["DEFAULT_ALPHA", "Corpus", "check_alpha", "fuse_documents", "rows_of"]

logger = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.5
SKIP_CANCEL = "document: text and image vectors cancel out"


def check_alpha(alpha) -> float:
    """Return ``alpha`` as a float in [0, 1], else raise ``ValueError``.

    Parameters
    ----------
    alpha : float
        The weight of a multimodal document's text.

    Returns
    -------
    float
    """
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}") from None
    if isinstance(alpha, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    return value


def rows_of(ids: Sequence[str], keys: Sequence[str], emb: Embedded) -> list[tuple[str, int]]:
    """Return ``(item id, row in emb.vectors)`` of the items whose key embedded, in order."""
    return [(i, emb.row_of[k]) for i, k in zip(ids, keys) if k in emb.row_of]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fuse_documents(
    ids: Sequence[str],
    text_keys: Sequence[str],
    image_keys: Sequence[str],
    texts: Embedded,
    images: Embedded,
    alpha: float,
    skipped: collections.Counter,
) -> tuple[list[str], np.ndarray]:
    """Embed multimodal documents as ``normalise(alpha * t + (1 - alpha) * v)``.

    Parameters
    ----------
    ids : sequence of str
        Document ids.
    text_keys, image_keys : sequence of str
        Each document's text and image cache key, in ``ids`` order.
    texts, images : Embedded
        The embedded texts and images; a document whose text or image failed is left out (the
        failure was counted when embedding).
    alpha : float
        The text's weight, in [0, 1].
    skipped : collections.Counter
        Counts documents whose mixed vector is (numerically) zero.

    Returns
    -------
    tuple of (list of str, numpy.ndarray)
        The kept ids and their float32 unit vectors ``[n, d]``.
    """
    kept = [
        (i, texts.row_of[t], images.row_of[v])
        for i, t, v in zip(ids, text_keys, image_keys)
        if t in texts.row_of and v in images.row_of
    ]
    dim = max(texts.vectors.shape[1], images.vectors.shape[1])
    if not kept:
        return [], np.zeros((0, dim), dtype=np.float32)
    t = _unit(texts.vectors[[r for _, r, _ in kept]].astype(np.float64))
    v = _unit(images.vectors[[r for _, _, r in kept]].astype(np.float64))
    mixed = alpha * t + (1.0 - alpha) * v
    norm = np.linalg.norm(mixed, axis=1)
    ok = norm > 1e-6
    if not ok.all():
        skipped[SKIP_CANCEL] += int((~ok).sum())
    out_ids = [i for (i, _, _), good in zip(kept, ok) if good]
    return out_ids, (mixed[ok] / norm[ok, None]).astype(np.float32)


@dataclass
class Corpus:
    """Stacked corpus vectors, one kind after another, and where each item landed.

    Attributes
    ----------
    vectors : numpy.ndarray
        ``[N, d]`` float32.
    labels : numpy.ndarray
        ``[N]`` the kind of each row ("text", "image", "multimodal").
    row_of : dict of str to dict of str to int
        Kind -> item id -> row.
    """

    vectors: np.ndarray
    labels: np.ndarray
    row_of: dict[str, dict[str, int]]

    @classmethod
    def stack(cls, parts: Sequence[tuple[str, Sequence[str], np.ndarray]], dim: int) -> Corpus:
        """Stack ``(kind, ids, vectors [len(ids), dim])`` parts in the order given.

        Parameters
        ----------
        parts : sequence of tuple
            One part per kind; empty parts keep their kind in :attr:`row_of`.
        dim : int
            The vector dimension (for empty parts).

        Returns
        -------
        Corpus
        """
        vectors, labels, row_of, start = [], [], {}, 0
        for kind, ids, vecs in parts:
            vectors.append(np.asarray(vecs, dtype=np.float32).reshape(-1, dim))
            labels += [kind] * len(ids)
            row_of[kind] = {i: start + n for n, i in enumerate(ids)}
            start += len(ids)
        return cls(np.concatenate(vectors).astype(np.float32), np.array(labels), row_of)

    def gold_pairs(self, query: BenchmarkQuery) -> list[tuple[int, int]]:
        """``(row, relevance)`` of a question's gold items that embedded.

        A two-kind question's gold ids name items of its gold modality; a MixBench question's ids
        are unique over the kinds, so they are looked up in every kind ("mixed" gold).
        """
        grades = query.gold_scores or (1,) * len(query.gold_ids)
        rows = self.row_of.get(query.gold_modality)
        tables = [rows] if rows is not None else list(self.row_of.values())
        out = []
        for g, grade in zip(query.gold_ids, grades):
            row = next((t[g] for t in tables if g in t), None)
            if row is not None:
                out.append((row, int(grade)))
        return out

    def gold_rows(self, query: BenchmarkQuery) -> list[int]:
        """Rows of a question's gold items that embedded."""
        return [r for r, _ in self.gold_pairs(query)]

    def pool_rows(self, query: BenchmarkQuery) -> list[int]:
        """Rows of a question's own candidate pool (the items that embedded)."""
        return [
            self.row_of[m][i]
            for i in query.pool_ids or ()
            for m in self.row_of
            if i in self.row_of[m]
        ]

    def qrels(self, queries: Sequence[BenchmarkQuery]) -> Qrels:
        """The kept questions' gold items as :class:`~mmgap_core.metrics.Qrels` (graded)."""
        rows = [(n, r, g) for n, q in enumerate(queries) for r, g in self.gold_pairs(q)]
        return Qrels(np.asarray(rows, dtype=np.int64).reshape(-1, 3), len(queries))

    def counts(self) -> dict[str, int]:
        """Rows per kind."""
        return {kind: len(ids) for kind, ids in self.row_of.items()}
