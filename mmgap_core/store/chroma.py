"""Chroma storage backend: one cosine collection per modality plus a small manifest collection.

Layout written by :class:`ChromaStore` under a store name ``NAME``:

* ``NAME-<modality>``: one collection per modality, cosine space, no embedding function
  (Chroma's default one downloads a model). Each item's metadata carries ``"modality"``.
* ``NAME-mmgap``: an empty manifest collection whose *collection metadata* holds store-level data
  as JSON strings: ``modalities``, ``model_id``, ``dim``, ``calibration``.

One collection per modality, queried concurrently, is much faster than a where-filter on one mixed
collection (measured ~4 ms vs ~120 ms per query at 100k items).

:class:`ForeignLayout` gives the same read API over collections other libraries wrote: a single
mixed collection tagged by metadata, LangChain's ``Chroma.add_images`` layout, and LlamaIndex's
``MultiModalVectorStoreIndex`` on two ``ChromaVectorStore`` s. :func:`detect_layout` tells them apart.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api.types import validate_metadata

from mmgap_core.store.base import AddResult, ModalityHits, as_query_matrix

__all__ = [
    "ChromaStore",
    "ForeignLayout",
    "IMAGE_BASE64_REGEX",
    "MAX_MANIFEST_VALUE_BYTES",
    "detect_layout",
    "is_base64_image",
    "open_store",
]

MANIFEST_SUFFIX = "mmgap"
MANIFEST_FORMAT = 1
ALREADY_INDEXED = "already indexed"
#: Largest JSON-encoded manifest value mmgap writes. Chroma itself stored 40 MB values in tests
#: (persistent and HTTP), but every manifest read ships all values, so keep them small.
MAX_MANIFEST_VALUE_BYTES = 4 * 1024 * 1024
_DEFAULT_WRITE_BATCH = 1000
_ID_CHUNK = 1000

# Chroma's collection-name rule: 3-512 chars of [a-zA-Z0-9._-], alphanumeric at both ends, no "..".
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_MAX_NAME = 512

# Base64 of each image signature (PNG, JPEG, GIF87a/89a, RIFF....WEBP, BM), then base64 charset to
# the end. Used both as a server-side `where_document` filter and client-side, so both agree.
IMAGE_BASE64_REGEX = (
    r"^(iVBORw0KGgo|/9j/|R0lGODdh|R0lGODlh|UklGR[A-Za-z0-9+/]{6}XRUJQ|Qk[0-3])"
    r"[A-Za-z0-9+/]*={0,2}$"
)
_IMAGE_B64_RE = re.compile(IMAGE_BASE64_REGEX)
_IMAGE_MAGIC: tuple[Callable[[bytes], bool], ...] = (
    lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
    lambda b: b.startswith(b"\xff\xd8\xff"),
    lambda b: b.startswith((b"GIF87a", b"GIF89a")),
    lambda b: b.startswith(b"RIFF") and b[8:12] == b"WEBP",
    lambda b: b.startswith(b"BM"),
)

_LLAMA_NODE_TYPES = ["TextNode", "ImageNode", "Node", "IndexNode"]


def is_base64_image(document: object) -> bool:
    """True when ``document`` is a base64 string that decodes to bytes with an image signature.

    This is how LangChain's ``Chroma.add_images`` stores an image (base64 file bytes as the
    document). Recognises PNG, JPEG, GIF, WEBP and BMP.
    """
    if not isinstance(document, str) or not _IMAGE_B64_RE.match(document):
        return False
    head = document[:16]
    try:
        raw = base64.b64decode(head + "=" * (-len(head) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return any(check(raw) for check in _IMAGE_MAGIC)


def _check_store_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"invalid store name {name!r}: use letters, digits, '.', '_' or '-', starting and "
            "ending with a letter or digit, without '..' (Chroma's collection-name rule)"
        )
    if len(name) + 1 + len(MANIFEST_SUFFIX) > _MAX_NAME:
        raise ValueError(f"store name {name[:40]!r}... is too long for Chroma collection names")
    return name


def _check_modality(name: str, modality: object) -> str:
    if not isinstance(modality, str) or not _NAME_RE.match(modality) or ".." in modality:
        raise ValueError(
            f"invalid modality label {modality!r}: use letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit, without '..'"
        )
    if modality == MANIFEST_SUFFIX:
        raise ValueError(f"modality label {modality!r} is reserved for the store manifest")
    full = f"{name}-{modality}"
    if len(full) > _MAX_NAME:
        raise ValueError(
            f"modality label {modality[:40]!r} makes collection name longer than {_MAX_NAME} chars"
        )
    return modality


def _collection_space(collection: Any) -> str:
    """Distance space of a collection ("cosine", "l2" or "ip"); Chroma's default is l2."""
    try:
        config = collection.configuration_json or {}
    except Exception:  # noqa: BLE001 - older/foreign clients may lack it
        config = {}
    for index in ("hnsw", "spann"):
        space = (config.get(index) or {}).get("space")
        if space:
            return str(space)
    space = (collection.metadata or {}).get("hnsw:space")
    return str(space) if space else "l2"


def _and_where(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> dict | None:
    if not a:
        return dict(b) if b else None
    if not b:
        return dict(a)
    return {"$and": [dict(a), dict(b)]}


def _max_batch(client: Any) -> int:
    getter = getattr(client, "get_max_batch_size", None)
    if getter is None:
        return _DEFAULT_WRITE_BATCH
    try:
        size = int(getter())
    except Exception:  # noqa: BLE001 - a server without pre-flight checks
        return _DEFAULT_WRITE_BATCH
    return size if size > 0 else _DEFAULT_WRITE_BATCH


def _get_collection(client: Any, name: str) -> Any:
    """``client.get_collection`` without an embedding function, or ``ValueError`` if missing."""
    try:
        return client.get_collection(name, embedding_function=None)
    except Exception as exc:  # chromadb raises NotFoundError (a ValueError subclass) or others
        names = sorted(c.name for c in client.list_collections())
        raise ValueError(f"Chroma collection {name!r} not found (existing: {names[:20]})") from exc


def _collection_exists(client: Any, name: str) -> bool:
    try:
        client.get_collection(name, embedding_function=None)
    except Exception:  # noqa: BLE001 - NotFoundError, or InvalidArgumentError for a bad name
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Reading: one modality = one or more "sources" (a collection plus the filter selecting it).
# ---------------------------------------------------------------------------------------------


@dataclass
class _Source:
    """A slice of one collection that belongs to one modality."""

    collection: Any
    where: dict | None = None
    where_document: dict | None = None
    ids: list[str] | None = None  # restriction for untagged items of a mixed collection
    # (id, document, uri, metadata) -> (document, uri) to expose for a hit
    describe: (
        Callable[[str, str | None, str | None, dict], tuple[str | None, str | None]] | None
    ) = None
    space: str = "cosine"

    def filters(self, user_where: Mapping[str, Any] | None) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        where = _and_where(self.where, user_where)
        if where:
            kw["where"] = where
        if self.where_document:
            kw["where_document"] = self.where_document
        if self.ids is not None:
            kw["ids"] = self.ids
        return kw

    @property
    def is_whole_collection(self) -> bool:
        return self.where is None and self.where_document is None and self.ids is None


@dataclass
class _Hit:
    score: float
    id: str
    document: str | None
    uri: str | None
    metadata: dict
    embedding: np.ndarray | None


def _query_source(
    src: _Source,
    q: np.ndarray,
    k: int,
    where: Mapping[str, Any] | None,
    include_embeddings: bool,
) -> list[list[_Hit]]:
    """Top-k hits of one source for each query row, scored by cosine similarity."""
    if src.ids is not None and not src.ids:
        return [[] for _ in range(len(q))]
    # Non-cosine collections: rank with their metric, but report exact cosine from embeddings.
    need_emb = include_embeddings or src.space != "cosine"
    include = ["distances", "documents", "uris", "metadatas"]
    if need_emb:
        include.append("embeddings")
    sent = q
    if src.space != "cosine":
        sent = q / np.linalg.norm(q, axis=1, keepdims=True).clip(min=1e-12)
    res = src.collection.query(
        query_embeddings=sent, n_results=k, include=include, **src.filters(where)
    )
    rows: list[list[_Hit]] = []
    qn = sent if src.space != "cosine" else None  # only non-cosine collections rescore
    for qi in range(len(q)):
        ids = res["ids"][qi]
        dists = res["distances"][qi]
        docs = (res.get("documents") or [[None] * len(ids)] * len(q))[qi]
        uris = (res.get("uris") or [[None] * len(ids)] * len(q))[qi]
        metas = (res.get("metadatas") or [[None] * len(ids)] * len(q))[qi]
        embs = None
        if ids and need_emb and res.get("embeddings") is not None:
            embs = np.asarray(res["embeddings"][qi], dtype=np.float32).reshape(len(ids), -1)
        row = []
        for j, item_id in enumerate(ids):
            meta = dict(metas[j] or {})
            emb = embs[j] if embs is not None else None
            if src.space == "cosine":
                score = 1.0 - float(dists[j])
            else:
                norm = float(np.linalg.norm(emb))
                score = float(qn[qi] @ emb) / norm if norm > 0 else 0.0
            doc, uri = docs[j], uris[j]
            if src.describe is not None:
                doc, uri = src.describe(item_id, doc, uri, meta)
            row.append(_Hit(score, item_id, doc, uri, meta, emb if include_embeddings else None))
        rows.append(row)
    return rows


def _assemble(
    modality: str, rows: list[list[_Hit]], k: int, include_embeddings: bool, dim: int
) -> ModalityHits:
    hits = ModalityHits.empty(modality, len(rows), k, dim if include_embeddings else None)
    for qi, row in enumerate(rows):
        row = sorted(row, key=lambda h: -h.score)[:k]
        hits.ids[qi] = [h.id for h in row]
        hits.documents[qi] = [h.document for h in row]
        hits.uris[qi] = [h.uri for h in row]
        hits.metadatas[qi] = [h.metadata for h in row]
        hits.scores[qi, : len(row)] = [h.score for h in row]
        if include_embeddings and hits.embeddings is not None:
            for j, h in enumerate(row):
                hits.embeddings[qi, j] = h.embedding
    return hits


_QUERY_POOL: ThreadPoolExecutor | None = None
_QUERY_POOL_LOCK = threading.Lock()


def _query_pool() -> ThreadPoolExecutor:
    """The process-wide pool that runs per-modality queries concurrently."""
    global _QUERY_POOL
    with _QUERY_POOL_LOCK:
        if _QUERY_POOL is None:
            _QUERY_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="mmgap-query")
        return _QUERY_POOL


class _StoreReader:
    """Read API shared by :class:`ChromaStore` and :class:`ForeignLayout`."""

    _client: Any

    # -- to implement -------------------------------------------------------------------------
    def _sources(self, modality: str) -> list[_Source]:
        raise NotImplementedError

    def modalities(self) -> list[str]:
        """Modality labels present in the store."""
        raise NotImplementedError

    @property
    def dim(self) -> int | None:
        """Embedding dimension, or ``None`` when nothing is stored yet."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def _check_known(self, mods: Sequence[str]) -> None:
        known = self.modalities()
        unknown = [m for m in mods if m not in known]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; this store has {known}")

    def _require(self, modality: str) -> list[_Source]:
        known = self.modalities()
        if modality not in known:
            raise ValueError(f"unknown modality {modality!r}; this store has {known}")
        return self._sources(modality)

    def count(self, modality: str) -> int:
        """Number of items of ``modality`` (``ValueError`` for an unknown modality)."""
        total = 0
        for src in self._require(modality):
            if src.is_whole_collection:
                total += src.collection.count()
            elif src.ids is not None and src.where is None and src.where_document is None:
                total += len(src.ids)
            else:
                total += len(src.collection.get(include=[], **src.filters(None))["ids"])
        return total

    def counts(self) -> dict[str, int]:
        """Item count for every modality."""
        return {m: self.count(m) for m in self.modalities()}

    def query(
        self,
        modality: str,
        embeddings: Any,
        k: int,
        *,
        where: Mapping[str, Any] | None = None,
        include_embeddings: bool = False,
    ) -> ModalityHits:
        """Top-``k`` cosine hits in ``modality`` for each row of ``embeddings`` ``[Q, d]``.

        One Chroma query call serves all ``Q`` rows. ``where`` is a Chroma metadata filter.
        An empty modality gives rows with no hits (scores all ``-inf``); an unknown modality
        raises ``ValueError`` listing the known ones.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        k = int(k)
        sources = self._require(modality)
        q = as_query_matrix(embeddings, dim=self.dim)
        if k == 0:
            return ModalityHits.empty(
                modality, len(q), 0, q.shape[1] if include_embeddings else None
            )
        rows: list[list[_Hit]] = [[] for _ in range(len(q))]
        for src in sources:
            for qi, part in enumerate(_query_source(src, q, k, where, include_embeddings)):
                rows[qi].extend(part)
        return _assemble(modality, rows, k, include_embeddings, q.shape[1])

    def query_modalities(
        self,
        embeddings: Any,
        k_per_modality: int | Mapping[str, int],
        *,
        where: Mapping[str, Any] | None = None,
        modalities: Sequence[str] | None = None,
        include_embeddings: bool = False,
    ) -> dict[str, ModalityHits]:
        """:meth:`query` every modality (or ``modalities``) concurrently, one thread each.

        ``k_per_modality`` is one ``k`` for all, or a ``{modality: k}`` dict; with a dict and no
        ``modalities`` the dict's keys are the modalities queried.
        """
        if modalities is None:
            if isinstance(k_per_modality, Mapping):
                mods = list(k_per_modality)
            else:
                mods = self.modalities()
        else:
            mods = list(modalities)
        self._check_known(mods)
        if isinstance(k_per_modality, Mapping):
            missing = [m for m in mods if m not in k_per_modality]
            if missing:
                raise ValueError(f"k_per_modality has no k for modalities {missing}")
            ks = {m: k_per_modality[m] for m in mods}
        else:
            ks = {m: k_per_modality for m in mods}
        q = as_query_matrix(embeddings, dim=self.dim)
        if not mods:
            return {}
        # One long-lived pool (starting threads per call cost ~3.5 ms); the last modality runs in the
        # calling thread, so a single-modality query starts no thread at all.
        futures = {
            m: _query_pool().submit(
                self.query, m, q, ks[m], where=where, include_embeddings=include_embeddings
            )
            for m in mods[:-1]
        }
        last = self.query(mods[-1], q, ks[mods[-1]], where=where, include_embeddings=include_embeddings)
        hits = {m: f.result() for m, f in futures.items()}
        hits[mods[-1]] = last
        return {m: hits[m] for m in mods}

    def iter_embeddings(
        self, modality: str, batch_size: int = 4096
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(ids, embeddings [b, d] float32)`` batches over every item of ``modality``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for src in self._require(modality):
            offset = 0
            while True:
                res = src.collection.get(
                    include=["embeddings"], limit=batch_size, offset=offset, **src.filters(None)
                )
                ids = list(res["ids"])
                if not ids:
                    break
                embs = np.asarray(res["embeddings"], dtype=np.float32).reshape(len(ids), -1)
                yield ids, embs
                if len(ids) < batch_size:
                    break
                offset += len(ids)

    def sample_documents(
        self, modality: str, n: int, seed: int = 0
    ) -> tuple[list[str], list[str | None], np.ndarray]:
        """A reproducible random sample of ``n`` items (all if fewer): ids, documents, embeddings.

        For an image modality ``documents`` holds the stored document (usually ``None``, or the
        base64 image in LangChain's layout) and the caller uses the embeddings.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        owners: dict[str, _Source] = {}
        for src in self._require(modality):
            for item_id in src.collection.get(include=[], **src.filters(None))["ids"]:
                owners.setdefault(item_id, src)
        pool = sorted(owners)
        rng = np.random.default_rng(seed)
        take = min(n, len(pool))
        chosen = [pool[i] for i in rng.choice(len(pool), size=take, replace=False)] if take else []
        docs: dict[str, str | None] = {}
        embs: dict[str, np.ndarray] = {}
        for start in range(0, len(chosen), _ID_CHUNK):
            chunk = chosen[start : start + _ID_CHUNK]
            by_src: dict[int, list[str]] = {}
            for item_id in chunk:
                by_src.setdefault(id(owners[item_id]), []).append(item_id)
            for src_ids in by_src.values():
                src = owners[src_ids[0]]
                res = src.collection.get(
                    ids=src_ids, include=["documents", "embeddings", "uris", "metadatas"]
                )
                for j, item_id in enumerate(res["ids"]):
                    doc = res["documents"][j]
                    if src.describe is not None:
                        doc, _ = src.describe(
                            item_id, doc, res["uris"][j], dict(res["metadatas"][j] or {})
                        )
                    docs[item_id] = doc
                    embs[item_id] = np.asarray(res["embeddings"][j], dtype=np.float32)
        d = self.dim or 0
        matrix = (
            np.stack([embs[i] for i in chosen]).astype(np.float32)
            if chosen
            else np.zeros((0, d), dtype=np.float32)
        )
        return chosen, [docs[i] for i in chosen], matrix


# ---------------------------------------------------------------------------------------------
# The mmgap layout
# ---------------------------------------------------------------------------------------------


class ChromaStore(_StoreReader):
    """mmgap's own Chroma layout: one cosine collection per modality and a manifest collection.

    Args:
        client: any Chroma client (``PersistentClient``, ``EphemeralClient``, ``HttpClient``).
        name: store name; collections are ``f"{name}-{modality}"`` and ``f"{name}-mmgap"``.
        modalities: modality collections to create up front (optional; ``add`` creates them).
    """

    layout = "mmgap"
    read_only = False

    def __init__(
        self, client: Any, name: str = "mmgap", *, modalities: Sequence[str] | None = None
    ) -> None:
        self._client = client
        self._name = _check_store_name(name)
        for m in modalities or ():
            _check_modality(name, m)
        self._lock = threading.RLock()
        self._collections: dict[str, Any] = {}
        self._known: set[str] = set()
        self._dim: int | None = None
        self._manifest = client.get_or_create_collection(
            self.manifest_name,
            embedding_function=None,
            metadata={
                "format": json.dumps(MANIFEST_FORMAT),
                "name": json.dumps(name),
                "modalities": json.dumps([]),
            },
        )
        for m in modalities or ():
            self._collection(m, create=True)

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def persistent(
        cls, path: str | Path, name: str = "mmgap", *, modalities: Sequence[str] | None = None
    ) -> ChromaStore:
        """A store in a local ``chromadb.PersistentClient`` at ``path``."""
        return cls(chromadb.PersistentClient(path=str(path)), name, modalities=modalities)

    @classmethod
    def ephemeral(
        cls, name: str = "mmgap", *, modalities: Sequence[str] | None = None
    ) -> ChromaStore:
        """A store in an in-memory ``chromadb.EphemeralClient`` (tests, notebooks)."""
        return cls(chromadb.EphemeralClient(), name, modalities=modalities)

    @classmethod
    def http(
        cls,
        host: str = "127.0.0.1",
        port: int = 8000,
        name: str = "mmgap",
        *,
        modalities: Sequence[str] | None = None,
    ) -> ChromaStore:
        """A store on a Chroma server (``chroma run``) through ``chromadb.HttpClient``."""
        return cls(chromadb.HttpClient(host=host, port=port), name, modalities=modalities)

    # -- foreign layouts (read-only views) ---------------------------------------------------
    @staticmethod
    def from_mixed_collection(
        client: Any, collection_name: str, *, modality_key: str = "modality"
    ) -> ForeignLayout:
        """Read-only view of one mixed collection; see :meth:`ForeignLayout.mixed`."""
        return ForeignLayout.mixed(client, collection_name, modality_key=modality_key)

    @staticmethod
    def from_langchain_images(client: Any, collection_name: str) -> ForeignLayout:
        """Read-only view of a LangChain ``Chroma.add_images`` collection."""
        return ForeignLayout.langchain_images(client, collection_name)

    @staticmethod
    def from_llamaindex(
        client: Any, text_collection: str | None, image_collection: str | None
    ) -> ForeignLayout:
        """Read-only view of LlamaIndex's two ``ChromaVectorStore`` collections."""
        return ForeignLayout.llamaindex(client, text_collection, image_collection)

    # -- names and collections --------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The store name."""
        return self._name

    @property
    def client(self) -> Any:
        """The Chroma client."""
        return self._client

    @property
    def manifest_name(self) -> str:
        """Name of the manifest collection."""
        return f"{self._name}-{MANIFEST_SUFFIX}"

    def collection_name(self, modality: str) -> str:
        """Chroma collection name of ``modality``."""
        return f"{self._name}-{_check_modality(self._name, modality)}"

    def _collection(self, modality: str, *, create: bool = False) -> Any | None:
        with self._lock:
            col = self._collections.get(modality)
            if col is not None:
                return col
            cname = self.collection_name(modality)
            if create:
                col = self._client.get_or_create_collection(
                    cname,
                    embedding_function=None,
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={"mmgap_store": self._name, "mmgap_modality": modality},
                )
            else:
                try:
                    col = self._client.get_collection(cname, embedding_function=None)
                except Exception:  # noqa: BLE001 - not created yet
                    return None
            space = _collection_space(col)
            if space != "cosine":
                raise ValueError(f"collection {cname!r} uses {space!r} space; mmgap needs cosine")
            self._collections[modality] = col
            if create and modality not in self._known:
                listed = self.read_manifest().get("modalities") or []
                if modality not in listed:
                    self.update_manifest(modalities=sorted({*listed, modality}))
                self._known.add(modality)
            return col

    def _sources(self, modality: str) -> list[_Source]:
        col = self._collection(modality)
        return [] if col is None else [_Source(col)]

    def modalities(self) -> list[str]:
        """Modalities listed in the manifest or present as this store's collections."""
        with self._lock:
            found = set(self.read_manifest().get("modalities") or [])
            prefix = f"{self._name}-"
            for col in self._client.list_collections():
                meta = col.metadata or {}
                if meta.get("mmgap_store") == self._name and col.name.startswith(prefix):
                    found.add(str(meta.get("mmgap_modality") or col.name[len(prefix) :]))
            self._known = found
            return sorted(found)

    def _require(self, modality: str) -> list[_Source]:
        # Fast path: a modality seen before needs no manifest round trip.
        if modality not in self._known:
            return super()._require(modality)
        return self._sources(modality)

    def _check_known(self, mods: Sequence[str]) -> None:
        if not set(mods) <= self._known:
            super()._check_known(mods)

    def count(self, modality: str) -> int:
        """Number of items of ``modality`` (``ValueError`` for an unknown modality)."""
        return sum(src.collection.count() for src in self._require(modality))

    # -- manifest -----------------------------------------------------------------------------------
    def _raw_manifest(self) -> dict[str, Any]:
        # Re-fetch: a Collection object keeps the metadata it was loaded with.
        col = self._client.get_collection(self.manifest_name, embedding_function=None)
        return dict(col.metadata or {})

    def read_manifest(self) -> dict[str, Any]:
        """Store-level data, JSON-decoded (``modalities``, ``model_id``, ``dim``, ...)."""
        out: dict[str, Any] = {}
        for key, value in self._raw_manifest().items():
            if isinstance(value, str):
                try:
                    out[key] = json.loads(value)
                except ValueError:
                    out[key] = value
            else:
                out[key] = value
        return out

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the manifest (``None`` deletes a key) and return the result.

        Chroma's ``modify(metadata=...)`` replaces all collection metadata, so this reads, merges
        and writes under a lock. Values must be JSON-serialisable; each encoded value must fit
        :data:`MAX_MANIFEST_VALUE_BYTES`. Writers in *other* processes can still race.
        """
        encoded: dict[str, str | None] = {}
        for key, value in fields.items():
            if value is None:
                encoded[key] = None
                continue
            try:
                text = json.dumps(value, allow_nan=False, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"manifest field {key!r} is not JSON-serialisable: {exc}") from exc
            size = len(text.encode("utf-8"))
            if size > MAX_MANIFEST_VALUE_BYTES:
                raise ValueError(
                    f"manifest field {key!r} is {size} bytes as JSON; mmgap stores manifest values "
                    f"in Chroma collection metadata and keeps each under "
                    f"{MAX_MANIFEST_VALUE_BYTES} bytes. Store less (e.g. fewer mean vectors)."
                )
            encoded[key] = text
        with self._lock:
            meta = self._raw_manifest()
            for key, text in encoded.items():
                if text is None:
                    meta.pop(key, None)
                else:
                    meta[key] = text
            if not meta:
                meta = {"format": json.dumps(MANIFEST_FORMAT)}  # Chroma rejects empty metadata
            try:
                self._manifest.modify(metadata=meta)
            except Exception as exc:
                raise ValueError(
                    f"Chroma refused the manifest update of {sorted(encoded)}: {exc}"
                ) from exc
        return self.read_manifest()

    def save_calibration(self, data: Mapping[str, Any]) -> None:
        """Store the core's calibration (opaque JSON-safe dict) under manifest key ``calibration``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"calibration must be a dict, got {type(data).__name__}")
        self.update_manifest(calibration=dict(data))

    def load_calibration(self) -> dict | None:
        """The stored calibration dict, or ``None`` if none was saved."""
        cal = self.read_manifest().get("calibration")
        return cal if isinstance(cal, dict) else None

    @property
    def model_id(self) -> str | None:
        """Embedding model id the store was built with (``None`` until recorded)."""
        value = self.read_manifest().get("model_id")
        return None if value is None else str(value)

    @property
    def dim(self) -> int | None:
        """Embedding dimension recorded in the manifest (``None`` until the first add)."""
        if self._dim is None:
            value = self.read_manifest().get("dim")
            self._dim = None if value is None else int(value)
        return self._dim

    # -- writing --------------------------------------------------------------------------------------
    def existing_ids(self, modality: str, ids: Sequence[str]) -> set[str]:
        """The subset of ``ids`` already stored in ``modality``."""
        col = self._collection(modality)
        if col is None or not ids:
            return set()
        found: set[str] = set()
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _ID_CHUNK):
            found.update(col.get(ids=unique[start : start + _ID_CHUNK], include=[])["ids"])
        return found

    def add(
        self,
        modality: str,
        ids: Sequence[str],
        embeddings: Any,
        *,
        documents: Sequence[str | None] | None = None,
        uris: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        model_id: str | None = None,
    ) -> AddResult:
        """Add items to ``modality``; ids already present are skipped, never overwritten.

        Texts go in ``documents``, images by reference in ``uris``. Every item's metadata gets
        ``"modality": modality``. The whole batch is validated before anything is written
        (lengths, NaN/inf, dimension and ``model_id`` against the store's recorded ones, metadata
        types); writes then go in chunks no larger than the client's max batch size.
        """
        _check_modality(self._name, modality)
        ids = list(ids)
        n = len(ids)
        for i, item_id in enumerate(ids):
            if not isinstance(item_id, str) or not item_id:
                raise ValueError(f"ids[{i}] must be a non-empty string, got {item_id!r}")
        if len(set(ids)) != n:
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"duplicate id {dup!r} in the batch")
        emb = np.asarray(embeddings, dtype=np.float32)
        if n == 0 and emb.size == 0:
            return AddResult()
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be a [n, d] matrix, got shape {emb.shape}")
        if emb.shape[0] != n:
            raise ValueError(f"{n} ids but {emb.shape[0]} embeddings")
        bad = ~np.isfinite(emb).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"embedding of id {ids[i]!r} (row {i}) contains NaN or inf")
        for label, column in (("documents", documents), ("uris", uris), ("metadatas", metadatas)):
            if column is not None and len(column) != n:
                raise ValueError(f"{n} ids but {len(column)} {label}")
        for label, column in (("documents", documents), ("uris", uris)):
            for i, value in enumerate(column or ()):
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"{label}[{i}] must be a string or None, got {value!r}")
        metas: list[dict] = []
        for i in range(n):
            given = dict((metadatas[i] if metadatas is not None else None) or {})
            if given.get("modality", modality) != modality:
                raise ValueError(
                    f"metadatas[{i}] has modality {given['modality']!r} but is added to "
                    f"{modality!r}"
                )
            given["modality"] = modality
            try:
                validate_metadata(given)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"metadatas[{i}] (id {ids[i]!r}): {exc}") from exc
            metas.append(given)
        manifest = self.read_manifest()
        stored_dim = manifest.get("dim")
        if stored_dim is not None and int(stored_dim) != emb.shape[1]:
            raise ValueError(
                f"embeddings have dimension {emb.shape[1]} but store {self._name!r} holds "
                f"dimension {stored_dim}"
            )
        stored_model = manifest.get("model_id")
        if model_id is not None and stored_model is not None and model_id != stored_model:
            raise ValueError(
                f"store {self._name!r} was built with model {stored_model!r}; refusing embeddings "
                f"from model {model_id!r} (use another store name)"
            )

        # Validation done: from here on we write.
        updates: dict[str, Any] = {}
        if stored_dim is None:
            updates["dim"] = int(emb.shape[1])
        if stored_model is None and model_id is not None:
            updates["model_id"] = model_id
        if updates:
            self.update_manifest(**updates)
            self._dim = int(emb.shape[1])
        col = self._collection(modality, create=True)
        present = self.existing_ids(modality, ids)
        keep = [i for i in range(n) if ids[i] not in present]
        step = _max_batch(self._client)
        for start in range(0, len(keep), step):
            rows = keep[start : start + step]
            kw: dict[str, Any] = {}
            if documents is not None and any(documents[i] is not None for i in rows):
                kw["documents"] = [documents[i] for i in rows]
            if uris is not None and any(uris[i] is not None for i in rows):
                kw["uris"] = [uris[i] for i in rows]
            col.add(
                ids=[ids[i] for i in rows],
                embeddings=emb[rows],
                metadatas=[metas[i] for i in rows],
                **kw,
            )
        return AddResult(
            added=[ids[i] for i in keep],
            skipped={i: ALREADY_INDEXED for i in ids if i in present},
        )

    def delete_store(self) -> None:
        """Delete every collection of this store (modalities and manifest)."""
        for m in self.modalities():
            try:
                self._client.delete_collection(self.collection_name(m))
            except Exception:  # noqa: BLE001 - listed in manifest but never created
                pass
        self._client.delete_collection(self.manifest_name)
        self._collections.clear()
        self._known.clear()

    def __repr__(self) -> str:
        return f"ChromaStore(name={self._name!r})"


# ---------------------------------------------------------------------------------------------
# Foreign layouts (read-only)
# ---------------------------------------------------------------------------------------------


def _langchain_describe(
    _id: str, doc: str | None, uri: str | None, meta: dict
) -> tuple[str | None, str | None]:
    # add_images keeps no path; users often put one in metadata.
    if uri is None:
        for key in ("uri", "source", "path", "file_path"):
            if isinstance(meta.get(key), str):
                uri = meta[key]
                break
    return doc, uri


def _llamaindex_describe(
    _id: str, doc: str | None, uri: str | None, meta: dict
) -> tuple[str | None, str | None]:
    node: dict = {}
    raw = meta.get("_node_content")
    if isinstance(raw, str):
        try:
            node = json.loads(raw)
        except ValueError:
            node = {}
    if uri is None:
        node_meta = node.get("metadata") or {}
        for value in (
            node.get("image_path"),
            node.get("image_url"),
            meta.get("file_path"),
            node_meta.get("file_path"),
        ):
            if isinstance(value, str) and value:
                uri = value
                break
    if doc == "":
        doc = None
    return doc, uri


class ForeignLayout(_StoreReader):
    """Read-only view, with the :class:`ChromaStore` read API, of collections others wrote.

    Build one with :meth:`mixed`, :meth:`langchain_images` or :meth:`llamaindex` (also reachable
    as ``ChromaStore.from_*``). It has no manifest: ``model_id`` is ``None`` and
    a calibration saved on it lives in memory only (export it to keep it).
    """

    read_only = True

    def __init__(
        self,
        client: Any,
        layout: str,
        sources: Callable[[], dict[str, list[_Source]]],
        description: str,
    ) -> None:
        self._client = client
        self.layout = layout
        self._build = sources
        self._description = description
        self._map: dict[str, list[_Source]] | None = None
        self._dim: int | None = None

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def mixed(
        cls, client: Any, collection_name: str, *, modality_key: str = "modality"
    ) -> ForeignLayout:
        """One collection holding all modalities.

        An item's modality is its ``metadata[modality_key]`` tag; an untagged item counts as
        ``"image"`` when it has a URI, else ``"text"``. Tagged items are queried with a
        ``where={modality_key: m}`` filter per modality (correct, but slower than one collection
        per modality); untagged ones are found by one scan of metadatas and URIs at first use
        and queried by id. Call :meth:`refresh` after the collection changes.
        """
        col = _get_collection(client, collection_name)
        space = _collection_space(col)

        def build() -> dict[str, list[_Source]]:
            tagged: dict[str, int] = {}
            untagged: dict[str, list[str]] = {}
            offset, step = 0, 5000
            while True:
                res = col.get(include=["metadatas", "uris"], limit=step, offset=offset)
                ids = res["ids"]
                if not ids:
                    break
                uris = res.get("uris") or [None] * len(ids)
                metas = res.get("metadatas") or [None] * len(ids)
                for item_id, uri, meta in zip(ids, uris, metas):
                    tag = (meta or {}).get(modality_key)
                    if isinstance(tag, str) and tag:
                        tagged[tag] = tagged.get(tag, 0) + 1
                    else:
                        untagged.setdefault("image" if uri else "text", []).append(item_id)
                if len(ids) < step:
                    break
                offset += len(ids)
            out: dict[str, list[_Source]] = {}
            for m in sorted({*tagged, *untagged}):
                srcs = []
                if m in tagged:
                    srcs.append(_Source(col, where={modality_key: m}, space=space))
                if m in untagged:
                    srcs.append(_Source(col, ids=untagged[m], space=space))
                out[m] = srcs
            return out

        return cls(client, "mixed", build, f"mixed collection {collection_name!r}")

    @classmethod
    def langchain_images(cls, client: Any, collection_name: str) -> ForeignLayout:
        """LangChain ``Chroma`` (langchain-chroma) with ``add_images`` and ``add_texts``.

        ``add_images`` stores each image's file bytes base64-encoded as the *document* and no
        modality tag; ``add_texts`` stores plain text documents. Images are the documents matching
        :data:`IMAGE_BASE64_REGEX` (selected server-side with ``where_document={"$regex": ...}``,
        texts with ``$not_regex``), so each modality is a filtered query rather than an
        over-fetch. Image hits carry the base64 string as ``document`` (what LangChain returns as
        ``page_content``) and a URI taken from metadata ``uri``/``source``/``path``/``file_path``
        when present. LangChain's default space is l2: scores are still exact cosine.
        """
        col = _get_collection(client, collection_name)
        space = _collection_space(col)

        def build() -> dict[str, list[_Source]]:
            image = _Source(
                col,
                where_document={"$regex": IMAGE_BASE64_REGEX},
                describe=_langchain_describe,
                space=space,
            )
            text = _Source(
                col,
                where_document={"$not_regex": IMAGE_BASE64_REGEX},
                describe=_langchain_describe,
                space=space,
            )
            out = {}
            for m, src in (("image", image), ("text", text)):
                if col.get(include=[], limit=1, **src.filters(None))["ids"]:
                    out[m] = [src]
            return out

        return cls(client, "langchain-images", build, f"LangChain collection {collection_name!r}")

    @classmethod
    def llamaindex(
        cls, client: Any, text_collection: str | None, image_collection: str | None
    ) -> ForeignLayout:
        """LlamaIndex ``MultiModalVectorStoreIndex`` over two ``ChromaVectorStore`` collections.

        The text store holds TextNodes, the image store ImageNodes. ``ChromaVectorStore.add``
        puts the node text in ``documents`` and the node as JSON in metadata ``_node_content``
        (type in ``_node_type``); an image hit's URI is the node's ``image_path`` (else
        ``image_url``, else metadata ``file_path``). Raw metadata is returned unchanged so an
        adapter can rebuild nodes with ``metadata_dict_to_node``.
        """
        if text_collection is None and image_collection is None:
            raise ValueError("give at least one of text_collection, image_collection")
        cols = {
            m: _get_collection(client, name)
            for m, name in (("text", text_collection), ("image", image_collection))
            if name is not None
        }

        def build() -> dict[str, list[_Source]]:
            return {
                m: [_Source(col, describe=_llamaindex_describe, space=_collection_space(col))]
                for m, col in cols.items()
            }

        names = ", ".join(f"{m}={c.name!r}" for m, c in cols.items())
        return cls(client, "llamaindex", build, f"LlamaIndex collections {names}")

    # -- API ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Forget what was learned about the collections (after they changed)."""
        self._map = None
        self._dim = None

    def _source_map(self) -> dict[str, list[_Source]]:
        if self._map is None:
            self._map = self._build()
        return self._map

    def _sources(self, modality: str) -> list[_Source]:
        return self._source_map()[modality]

    def modalities(self) -> list[str]:
        """Modalities found in the collection(s)."""
        return sorted(self._source_map())

    @property
    def dim(self) -> int | None:
        """Dimension of the stored embeddings (from one stored item), ``None`` if empty."""
        if self._dim is None:
            for srcs in self._source_map().values():
                for src in srcs:
                    res = src.collection.get(include=["embeddings"], limit=1, **src.filters(None))
                    if res["ids"]:
                        self._dim = int(np.asarray(res["embeddings"][0]).shape[-1])
                        return self._dim
        return self._dim

    @property
    def model_id(self) -> str | None:
        """Unknown for foreign layouts: always ``None``."""
        return None

    def load_calibration(self) -> dict | None:
        """The calibration saved on this view in this process, else ``None``."""
        return getattr(self, "_calibration", None)

    def save_calibration(self, data: Mapping[str, Any]) -> None:
        """Keep a calibration in memory: collections others wrote are never modified.

        Persist it with ``RetrievalEngine.export_calibration`` and load it again with
        ``import_calibration``.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"calibration must be a dict, got {type(data).__name__}")
        self._calibration = dict(data)

    def add(self, *args: Any, **kwargs: Any) -> AddResult:
        """Not supported: foreign layouts are read-only."""
        raise TypeError(
            f"{self._description} is a read-only {self.layout!r} view; add via its library"
        )

    def __repr__(self) -> str:
        return f"ForeignLayout({self.layout!r}, {self._description})"


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------


def detect_layout(client: Any, collection_name: str) -> str:
    """Which layout ``collection_name`` is: "mmgap" | "mixed" | "langchain-images" | "llamaindex".

    ``collection_name`` may be an mmgap store name (its ``-mmgap`` manifest exists) or any of a
    store's collections. Other collections are told apart by content: LlamaIndex nodes carry
    ``_node_type`` metadata, LangChain images are base64-image documents; anything else is read
    as a mixed collection (tagged or inferred per item).
    """
    if _collection_exists(client, f"{collection_name}-{MANIFEST_SUFFIX}"):
        return "mmgap"
    col = _get_collection(client, collection_name)
    meta = col.metadata or {}
    if "mmgap_store" in meta or (
        collection_name.endswith(f"-{MANIFEST_SUFFIX}") and "modalities" in meta
    ):
        return "mmgap"
    if col.get(where={"_node_type": {"$in": _LLAMA_NODE_TYPES}}, limit=1, include=[])["ids"]:
        return "llamaindex"
    if col.get(where_document={"$regex": IMAGE_BASE64_REGEX}, limit=1, include=[])["ids"]:
        return "langchain-images"
    return "mixed"


def open_store(client: Any, collection_name: str) -> ChromaStore | ForeignLayout:
    """Open ``collection_name`` with the reader its :func:`detect_layout` layout needs.

    A LlamaIndex collection opened alone becomes a one-modality view ("image" when it holds
    ImageNodes, else "text"); use :meth:`ChromaStore.from_llamaindex` to pair both stores.
    """
    layout = detect_layout(client, collection_name)
    if layout == "mmgap":
        if _collection_exists(client, f"{collection_name}-{MANIFEST_SUFFIX}"):
            return ChromaStore(client, collection_name)
        meta = _get_collection(client, collection_name).metadata or {}
        store = meta.get("mmgap_store")
        if store is None:  # the manifest collection itself
            store = collection_name[: -len(MANIFEST_SUFFIX) - 1]
        return ChromaStore(client, str(store))
    if layout == "llamaindex":
        col = _get_collection(client, collection_name)
        has_images = col.get(where={"_node_type": "ImageNode"}, limit=1, include=[])["ids"]
        if has_images:
            return ForeignLayout.llamaindex(client, None, collection_name)
        return ForeignLayout.llamaindex(client, collection_name, None)
    if layout == "langchain-images":
        return ForeignLayout.langchain_images(client, collection_name)
    return ForeignLayout.mixed(client, collection_name)
