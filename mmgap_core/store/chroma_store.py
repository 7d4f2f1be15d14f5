"""mmgap's own Chroma layout: one cosine collection per modality plus a manifest collection.

Layout written by :class:`ChromaStore` under a store name ``NAME``:

* ``NAME-<modality>``: one collection per modality, cosine space, no embedding function
  (Chroma's default one downloads a model). Each item's metadata carries ``"modality"``.
* ``NAME-mmgap``: the manifest (see :mod:`mmgap_core.store.chroma_manifest`): one record per
  concern, ``model_id``, ``dim``, ``encoder``, ``calibration``, and one per modality.

One collection per modality, queried concurrently, is much faster than a where-filter on one mixed
collection (measured ~4 ms vs ~120 ms per query at 100k items). Collections other libraries wrote
are read by :mod:`mmgap_core.store.chroma_foreign`; this module does not depend on it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api.types import validate_metadata

from mmgap_core.results import BATCH_KEY
from mmgap_core.store.base import AddResult
from mmgap_core.store.chroma_client import (
    check_modality,
    check_store_name,
    collection_space,
    connect,
    find_collection,
    is_not_found,
    max_batch,
    unavailable_guard,
)
from mmgap_core.store.chroma_manifest import Manifest
from mmgap_core.store.chroma_query import Source
from mmgap_core.store.chroma_reader import StoreReader
from mmgap_core.store.connection import DEFAULT_CLOUD_ENV, ChromaConnection

__all__ = ["ALREADY_INDEXED", "BATCH_KEY", "ChromaStore"]

logger = logging.getLogger(__name__)

ALREADY_INDEXED = "already indexed"
_ID_CHUNK = 1000


class ChromaStore(StoreReader):
    """mmgap's own Chroma layout: one cosine collection per modality and a manifest collection.

    Caching rule: only what can never change while the store exists is cached in the handle: the
    embedding dimension once recorded (``add`` refuses any other), the modalities seen (they only
    grow) and the collection handles. Everything else in the manifest (``model_id``, ``encoder``,
    ``calibration``, other fields) is read from Chroma on every call, so writes by other
    processes are seen at once. :meth:`delete_store` clears the cache.

    Concurrent writers: each manifest key is its own record, and a write touches only the keys it
    names, so an ``index`` run recording ``model_id`` or ``encoder`` never undoes a concurrent
    :meth:`save_calibration` (the last calibration written is the one read back).

    Parameters
    ----------
    client : chromadb client
        Any Chroma client (``PersistentClient``, ``EphemeralClient``, ``HttpClient``).
    name : str
        Store name; collections are ``f"{name}-{modality}"`` and ``f"{name}-mmgap"``.
    modalities : sequence of str, optional
        Modality collections to create up front (``add`` creates them otherwise).

    Raises
    ------
    StoreUnavailableError
        From any method, when the Chroma server cannot be reached.
    """

    layout = "mmgap"
    read_only = False

    @unavailable_guard
    def __init__(
        self, client: Any, name: str = "mmgap", *, modalities: Sequence[str] | None = None
    ) -> None:
        self._client = client
        self._name = check_store_name(name)
        for m in modalities or ():
            check_modality(name, m)
        self._lock = threading.RLock()
        self._collections: dict[str, Any] = {}
        self._source_lists: dict[str, list[Source]] = {}
        self._known: set[str] = set()
        self._dim: int | None = None
        self._manifest = Manifest(client, self._name)
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
        **options: Any,
    ) -> ChromaStore:
        """A store on a Chroma server (``chroma run``, or a TLS/auth proxy in front of one).

        ``options``: other :class:`~mmgap_core.store.connection.ChromaConnection` fields (``ssl``,
        ``verify``, ``headers``, ``header_env``, ``auth``, ``auth_env``, ``token_header``,
        ``username``, ``tenant``, ``database``); secrets come from environment variables only.

        Raises
        ------
        StoreUnavailableError
            No server at ``host:port``; ``StoreAuthError``, ``StoreTLSError`` (its subclasses)
            for refused or missing credentials and an untrusted certificate.
        """
        conn = ChromaConnection(host=host, port=port, **options)
        return cls.connect(conn, name, modalities=modalities)

    @classmethod
    def cloud(
        cls,
        name: str = "mmgap",
        *,
        tenant: str | None = None,
        database: str | None = None,
        api_key_env: str = DEFAULT_CLOUD_ENV,
        modalities: Sequence[str] | None = None,
        **options: Any,
    ) -> ChromaStore:
        """A store on Chroma Cloud (``chromadb.CloudClient``), API key read from ``api_key_env``.

        ``tenant`` and ``database`` default to what the key grants; ``options``: other
        :class:`~mmgap_core.store.connection.ChromaConnection` fields (``host``, ``verify``, ...).
        """
        options.update(cloud=True, tenant=tenant, database=database, auth_env=api_key_env)
        return cls.connect(ChromaConnection(**options), name, modalities=modalities)

    @classmethod
    def connect(cls, connection: ChromaConnection, name: str = "mmgap", **kw: Any) -> ChromaStore:
        """A store on the server or Cloud ``connection`` describes (``kw``: ``modalities``)."""
        return cls(connect(connection), name, **kw)

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
        return self._manifest.name

    def collection_name(self, modality: str) -> str:
        """Chroma collection name of ``modality``."""
        return f"{self._name}-{check_modality(self._name, modality)}"

    def _collection(self, modality: str, *, create: bool = False) -> Any | None:
        with self._lock:
            col = self._collections.get(modality)
            if col is not None:
                return col
            cname = self.collection_name(modality)
            if create:
                if modality not in self._known:
                    # Record first: the manifest lists every collection of the store (a crash in
                    # between leaves a listed modality without a collection, read as empty).
                    self._manifest.add_modalities([modality])
                    self._known.add(modality)
                col = self._client.get_or_create_collection(
                    cname,
                    embedding_function=None,
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={"mmgap_store": self._name, "mmgap_modality": modality},
                )
            else:
                col = find_collection(self._client, cname)
                if col is None:  # listed, or asked for, but not created yet
                    return None
            space = collection_space(col)
            if space != "cosine":
                raise ValueError(f"collection {cname!r} uses {space!r} space; mmgap needs cosine")
            self._collections[modality] = col
            return col

    def _sources(self, modality: str) -> list[Source]:
        sources = self._source_lists.get(modality)
        if sources is None:
            col = self._collection(modality)
            if col is None:
                return []
            sources = self._source_lists.setdefault(modality, [Source(col)])
        return sources

    @unavailable_guard
    def modalities(self) -> list[str]:
        """Modalities recorded in the manifest (one Chroma call; read fresh every time)."""
        found = self._manifest.modalities()
        with self._lock:
            self._known = set(found)
        return found

    def _require(self, modality: str) -> list[Source]:
        # Fast path: a modality seen before needs no manifest round trip.
        if modality not in self._known:
            return super()._require(modality)
        return self._sources(modality)

    def _check_known(self, mods: Sequence[str]) -> None:
        if not set(mods) <= self._known:
            super()._check_known(mods)

    @unavailable_guard
    def count(self, modality: str) -> int:
        """Number of items of ``modality`` (``ValueError`` for an unknown modality)."""
        return sum(src.collection.count() for src in self._require(modality))

    # -- manifest ----------------------------------------------------------------------------------
    @unavailable_guard
    def read_manifest(self) -> dict[str, Any]:
        """Store-level data, merged from the manifest records.

        Returns
        -------
        dict
            ``format``, ``name``, ``modalities`` (sorted) and every field written with
            :meth:`update_manifest` (``model_id``, ``dim``, ``encoder``, ``calibration``, ...).
        """
        return self._manifest.read()

    @unavailable_guard
    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Write ``fields`` (``None`` deletes a key) and return the merged manifest.

        Each key is its own record: keys not named are never rewritten, so concurrent writers
        of different keys (in any process) cannot undo each other.

        Raises
        ------
        ValueError
            For ``format``, ``name`` or ``modalities`` (maintained by the store), a value that is
            not JSON-serialisable or over
            :data:`~mmgap_core.store.chroma_manifest.MAX_MANIFEST_VALUE_BYTES` as JSON, or a
            write Chroma refuses. Nothing is written then.
        """
        self._manifest.write(fields)
        if "dim" in fields:
            self._dim = None if fields["dim"] is None else int(fields["dim"])
        return self._manifest.read()

    @unavailable_guard
    def save_calibration(self, data: Mapping[str, Any]) -> None:
        """Store the core's calibration (an opaque JSON-safe dict) as the ``calibration`` record."""
        if not isinstance(data, Mapping):
            raise ValueError(f"calibration must be a dict, got {type(data).__name__}")
        self._manifest.write({"calibration": dict(data)})

    @unavailable_guard
    def load_calibration(self) -> dict | None:
        """The stored calibration dict, or ``None`` if none was saved."""
        cal = self._manifest.read(["calibration"]).get("calibration")
        return cal if isinstance(cal, dict) else None

    @property
    @unavailable_guard
    def model_id(self) -> str | None:
        """Embedding model id the store was built with (``None`` until recorded)."""
        value = self._manifest.read(["model_id"]).get("model_id")
        return None if value is None else str(value)

    @property
    @unavailable_guard
    def dim(self) -> int | None:
        """Embedding dimension recorded in the manifest (``None`` until the first add)."""
        if self._dim is None:
            value = self._manifest.read(["dim"]).get("dim")
            self._dim = None if value is None else int(value)
        return self._dim

    # -- writing -----------------------------------------------------------------------------------
    @unavailable_guard
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

    def _validated_metadatas(
        self, modality: str, ids: list[str], metadatas: Sequence[Mapping[str, Any] | None] | None
    ) -> list[dict]:
        metas: list[dict] = []
        for i in range(len(ids)):
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
        return metas

    @unavailable_guard
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
        ``"modality": modality`` and ``"mmgap_batch"`` (:data:`BATCH_KEY`), the id of this call.
        The whole batch is validated before anything is written (lengths, NaN/inf, dimension and
        ``model_id`` against the store's recorded ones, metadata types); writes then go in chunks
        no larger than the client's max batch size.

        Returns
        -------
        AddResult
            Ids written by this call, and ids skipped with the reason. An id another writer added
            between this call's check and its write is reported as already indexed, not added.
        """
        check_modality(self._name, modality)
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
        metas = self._validated_metadatas(modality, ids, metadatas)
        identity = self._manifest.read(["dim", "model_id"])
        stored_dim = identity.get("dim")
        if stored_dim is not None and int(stored_dim) != emb.shape[1]:
            raise ValueError(
                f"embeddings have dimension {emb.shape[1]} but store {self._name!r} holds "
                f"dimension {stored_dim}"
            )
        stored_model = identity.get("model_id")
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
            self._manifest.write(updates)
        self._dim = int(emb.shape[1])
        col = self._collection(modality, create=True)
        present = self.existing_ids(modality, ids)
        keep = [i for i in range(n) if ids[i] not in present]
        step = max_batch(self._client)
        # Chroma silently keeps the first of two adds of one id: a concurrent writer may win the
        # race after the check above, so each item carries this call's id, read back below.
        token = uuid.uuid4().hex[:16]
        for i in keep:
            metas[i][BATCH_KEY] = token
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
        mine = self._written_by(col, [ids[i] for i in keep], token)
        return AddResult(
            added=[ids[i] for i in keep if ids[i] in mine],
            skipped={i: ALREADY_INDEXED for i in ids if i in present or i not in mine},
        )

    def _written_by(self, col: Any, ids: list[str], token: str) -> set[str]:
        """The ``ids`` whose stored metadata carries ``token`` (Chroma ignores a second add)."""
        mine: set[str] = set()
        for start in range(0, len(ids), _ID_CHUNK):
            got = col.get(ids=ids[start : start + _ID_CHUNK], include=["metadatas"])
            for item_id, meta in zip(got["ids"], got["metadatas"] or []):
                if (meta or {}).get(BATCH_KEY) == token:
                    mine.add(item_id)
        return mine

    @unavailable_guard
    def delete_store(self) -> None:
        """Delete every collection of this store (modalities and manifest)."""
        for m in self.modalities():
            try:
                self._client.delete_collection(self.collection_name(m))
            except Exception as exc:
                if not is_not_found(exc):  # listed in the manifest but never created is fine
                    raise
        self._client.delete_collection(self.manifest_name)
        with self._lock:
            self._collections.clear()
            self._source_lists.clear()
            self._known.clear()
            self._dim = None

    def __repr__(self) -> str:
        return f"ChromaStore(name={self._name!r})"
