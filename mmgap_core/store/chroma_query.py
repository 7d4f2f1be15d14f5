"""Querying Chroma: one modality's sources are queried and their hits assembled into ModalityHits.

A modality is read from one or more :class:`Source` s: a collection plus the filter that selects
the modality's items in it. mmgap's own layout has exactly one whole cosine collection per
modality, which takes the fast path: Chroma already returns the hits best first, so scores are
``1 - distance`` (one numpy conversion per modality) and nothing is re-sorted. Other shapes
(several sources, non-cosine spaces, foreign documents) are merged and re-ranked by exact cosine
similarity.

:func:`query_sources` is :func:`fetch_rows` (the Chroma calls and plain-Python rows) then
:func:`hits_from_rows` (the arrays); :meth:`StoreReader.query_per_modality` runs the first in each
modality's thread and the second in the calling thread. :func:`run_per_modality` runs one call per
modality on a long-lived thread pool.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from mmgap_core.store.base import ModalityHits

__all__ = [
    "Describe",
    "Source",
    "fetch_rows",
    "hits_from_rows",
    "query_sources",
    "run_per_modality",
]

logger = logging.getLogger(__name__)

#: ``(id, document, uri, metadata) -> (document, uri)`` to expose for one hit.
Describe = Callable[[str, str | None, str | None, dict], tuple[str | None, str | None]]
T = TypeVar("T")

_INCLUDE = ["distances", "documents", "uris", "metadatas"]
_INCLUDE_EMB = [*_INCLUDE, "embeddings"]


def and_where(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict | None:
    """Chroma ``where`` that requires both filters (``None`` for no filter)."""
    if not a:
        return dict(b) if b else None
    if not b:
        return dict(a)
    return {"$and": [dict(a), dict(b)]}


@dataclass(eq=False)
class Source:
    """A slice of one collection that belongs to one modality.

    Parameters
    ----------
    collection : chromadb Collection
        The collection holding the items.
    where, where_document : dict, optional
        Chroma filters that select the modality's items (``None``: the whole collection).
    ids : list of str, optional
        Restriction to these ids (untagged items of a mixed collection).
    describe : callable, optional
        ``(id, document, uri, metadata) -> (document, uri)`` giving what a hit exposes.
    space : str
        The collection's distance space; hits are always scored by cosine similarity.
    """

    collection: Any
    where: dict | None = None
    where_document: dict | None = None
    ids: list[str] | None = None
    describe: Describe | None = None
    space: str = "cosine"

    def filters(self, user_where: Mapping[str, Any] | None) -> dict[str, Any]:
        """Keyword arguments selecting this source's items, ``user_where`` included."""
        kw: dict[str, Any] = {}
        where = and_where(self.where, user_where)
        if where:
            kw["where"] = where
        if self.where_document:
            kw["where_document"] = self.where_document
        if self.ids is not None:
            kw["ids"] = self.ids
        return kw

    @property
    def is_whole_collection(self) -> bool:
        """True when the source is its entire collection (no filter)."""
        return self.where is None and self.where_document is None and self.ids is None


# One query row of one source: ids, cosine scores (floats, best first), documents, uris, metadatas,
# embeddings.
_Row = tuple[list, Sequence[float], list, list, list, np.ndarray | None]


def _query_one(
    src: Source,
    q: np.ndarray,
    k: int,
    where: Mapping[str, Any] | None,
    include_embeddings: bool,
) -> list[_Row]:
    """Top-``k`` of one source for each query row, scored by cosine similarity, best first."""
    cosine = src.space == "cosine"
    # Non-cosine collections: rank with their metric on unit queries, score exact cosine.
    need_emb = include_embeddings or not cosine
    sent = q if cosine else q / np.linalg.norm(q, axis=1, keepdims=True).clip(min=1e-12)
    kw = src.filters(where) if (where or not src.is_whole_collection) else {}
    res = src.collection.query(
        query_embeddings=sent,
        n_results=k,
        include=_INCLUDE_EMB if need_emb else _INCLUDE,
        **kw,
    )
    ids_rows = res["ids"]
    dist_rows = res["distances"]
    doc_rows = res.get("documents")
    uri_rows = res.get("uris")
    meta_rows = res.get("metadatas")
    emb_rows = res.get("embeddings") if need_emb else None
    rows: list[_Row] = []
    for qi in range(len(q)):
        ids = ids_rows[qi]
        n = len(ids)
        docs = doc_rows[qi] if doc_rows is not None else [None] * n
        uris = uri_rows[qi] if uri_rows is not None else [None] * n
        # Chroma builds fresh dicts per call; hits copy the ones they keep.
        metas = [m or {} for m in meta_rows[qi]] if meta_rows is not None else []
        if len(metas) != n:
            metas = [{} for _ in range(n)]
        embs = None
        if n and emb_rows is not None:
            embs = np.asarray(emb_rows[qi], dtype=np.float32).reshape(n, -1)
        if cosine:
            # Plain floats: a search's hits need no numpy call until the [Q, k] score matrix.
            scores = [1.0 - d for d in dist_rows[qi]]
        elif n:
            norms = np.linalg.norm(embs, axis=1).astype(np.float64)
            dots = embs.astype(np.float64) @ sent[qi].astype(np.float64)
            scores = np.divide(dots, norms, out=np.zeros(n), where=norms > 0)
        else:
            scores = np.zeros(0)
        if src.describe is not None:
            described = [src.describe(i, d, u, m) for i, d, u, m in zip(ids, docs, uris, metas)]
            docs = [d for d, _ in described]
            uris = [u for _, u in described]
        rows.append((ids, scores, docs, uris, metas, embs if include_embeddings else None))
    return rows


def _merge(parts: list[_Row], k: int) -> _Row:
    """One query row from several sources: all hits re-ranked by score (stable), top ``k``."""
    ids = [i for p in parts for i in p[0]]
    scores = np.concatenate([np.asarray(p[1], dtype=np.float64) for p in parts])
    order = np.argsort(-scores, kind="stable")[:k].tolist()
    docs = [d for p in parts for d in p[2]]
    uris = [u for p in parts for u in p[3]]
    metas = [m for p in parts for m in p[4]]
    embs = None
    with_emb = [p[5] for p in parts if p[5] is not None]
    if with_emb and all(p[5] is not None for p in parts if p[0]):  # parts without hits have none
        embs = np.concatenate(with_emb)[order]
    return (
        [ids[j] for j in order],
        scores[order],
        [docs[j] for j in order],
        [uris[j] for j in order],
        [metas[j] for j in order],
        embs,
    )


def query_sources(
    modality: str,
    sources: Sequence[Source],
    q: np.ndarray,
    k: int,
    *,
    where: Mapping[str, Any] | None = None,
    include_embeddings: bool = False,
) -> ModalityHits:
    """Top-``k`` cosine hits of one modality for every row of the validated query matrix ``q``.

    Parameters
    ----------
    modality : str
        The modality label the hits are reported under.
    sources : sequence of Source
        Where the modality's items live (empty: a modality with no collection yet).
    q : ndarray, shape (Q, d)
        Validated float32 query rows.
    k : int
        Hits per query row (>= 1).
    where : dict, optional
        A Chroma metadata filter applied on top of each source's own filter.
    include_embeddings : bool
        Also return the hits' embeddings.

    Returns
    -------
    ModalityHits
        Rows best first; short rows are padded with ``-inf`` scores (and zero embeddings).
    """
    rows = fetch_rows(sources, q, k, where=where, include_embeddings=include_embeddings)
    return hits_from_rows(modality, rows, q.shape, k, include_embeddings)


def fetch_rows(
    sources: Sequence[Source],
    q: np.ndarray,
    k: int,
    *,
    where: Mapping[str, Any] | None = None,
    include_embeddings: bool = False,
) -> list[_Row] | None:
    """The Chroma side of :func:`query_sources`: each query row's hits, best first.

    ``None`` when there is nothing to query (no live source, or no query row). The rows become
    :class:`ModalityHits` with :func:`hits_from_rows`.
    """
    live = [s for s in sources if s.ids is None or s.ids]
    if not live or q.shape[0] == 0:
        return None
    parts = [_query_one(src, q, k, where, include_embeddings) for src in live]
    if len(parts) == 1 and live[0].space == "cosine":
        return parts[0]  # Chroma's order is already best first
    return [_merge([p[qi] for p in parts], k) for qi in range(q.shape[0])]


def hits_from_rows(
    modality: str,
    rows: list[_Row] | None,
    shape: tuple[int, int],
    k: int,
    include_embeddings: bool = False,
) -> ModalityHits:
    """:func:`fetch_rows`' rows as :class:`ModalityHits` (``shape``: the query matrix's).

    :meth:`StoreReader.query_per_modality` calls it in the calling thread once every modality's
    rows are in, so the per-modality threads make no numpy call after their query.
    """
    n_q, dim = shape
    if rows is None:
        return ModalityHits.empty(modality, n_q, k, dim if include_embeddings else None)
    if all(len(row[0]) == k for row in rows):  # full rows (the usual case): one conversion
        scores = np.array([row[1] for row in rows], dtype=np.float32)
    else:
        scores = np.full((n_q, k), -np.inf, dtype=np.float32)
        for qi, row in enumerate(rows):
            if row[0]:
                scores[qi, : len(row[0])] = row[1]
    embeddings = np.zeros((n_q, k, dim), dtype=np.float32) if include_embeddings else None
    if embeddings is not None:
        for qi, row in enumerate(rows):
            if row[0] and row[5] is not None:
                embeddings[qi, : len(row[0])] = row[5]
    return ModalityHits(
        modality=modality,
        ids=[r[0] for r in rows],
        scores=scores,
        documents=[r[2] for r in rows],
        uris=[r[3] for r in rows],
        metadatas=[r[4] for r in rows],
        embeddings=embeddings,
    )


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The process-wide pool that runs per-modality queries concurrently."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mmgap-query")
    return _POOL


def run_per_modality(fn: Callable[[str], T], modalities: Sequence[str]) -> dict[str, T]:
    """``{m: fn(m)}`` for every modality, concurrently, in the order given.

    One long-lived pool serves every call (starting threads per call cost ~3.5 ms); the last
    modality runs in the calling thread, so a single modality starts no thread at all. The first
    error raised (in modality order) propagates once every call has finished.
    """
    mods = list(modalities)
    if not mods:
        return {}
    futures = [(m, _pool().submit(fn, m)) for m in mods[:-1]]
    try:
        last = fn(mods[-1])
    except BaseException:
        wait([f for _, f in futures])  # no query outlives the call, even on error
        raise
    out = {m: f.result() for m, f in futures}
    out[mods[-1]] = last
    return out
