"""The manifest of an mmgap Chroma store: one record per concern in the ``NAME-mmgap`` collection.

Store-level data (``model_id``, ``dim``, ``encoder``, ``calibration``, any other field) is kept as
*records* of the manifest collection, one per key, never as one shared document:

* field ``key``: id ``"field:<key>"``, the JSON-encoded value as document, metadata
  ``{"kind": "field", "key": key}``;
* modality ``m``: id ``"modality:<m>"``, metadata ``{"kind": "modality", "modality": m}``. The
  store writes it before creating the modality's collection, so these records list every
  collection of the store.

A write upserts (or deletes) only the records of the keys it names, in one Chroma call, so writers
of different keys never undo each other: an ``index`` run recording ``model_id`` cannot revert a
concurrent ``calibrate``. A read of one record always sees one complete write. Every record
carries the same one-number vector, as Chroma needs a vector per record (and must never compute
one with its default embedding function).

The collection's own metadata holds only ``format``, ``name`` and ``mmgap_manifest``. Stores
written by mmgap's first layout (format 1: every value as a JSON string in the collection
metadata, rewritten whole on each update) are migrated when opened: each value becomes a record
unless a record of that key already exists, then the collection metadata is reset.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from mmgap_core.store.chroma_client import MANIFEST_SUFFIX, unavailable_error

__all__ = ["MANIFEST_FORMAT", "MAX_MANIFEST_VALUE_BYTES", "Manifest"]

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = 2
#: Largest JSON-encoded manifest value mmgap writes. Every full manifest read ships all values,
#: so keep them small.
MAX_MANIFEST_VALUE_BYTES = 4 * 1024 * 1024
#: Keys :meth:`Manifest.write` refuses: the store maintains them.
RESERVED_KEYS = frozenset({"format", "name", "modalities"})
_BASE_KEYS = frozenset({"format", "name", "mmgap_manifest"})
_VECTOR = [1.0]
_FIELD = "field:"
_MODALITY = "modality:"


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _encode(key: str, value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"manifest field {key!r} is not JSON-serialisable: {exc}") from exc
    size = len(text.encode("utf-8"))
    if size > MAX_MANIFEST_VALUE_BYTES:
        raise ValueError(
            f"manifest field {key!r} is {size} bytes as JSON; mmgap keeps each manifest value "
            f"under {MAX_MANIFEST_VALUE_BYTES} bytes. Store less (e.g. fewer mean vectors)."
        )
    return text


class Manifest:
    """The manifest collection of store ``store_name``, created if missing.

    Nothing is cached: every read asks Chroma, so writes by other processes are seen at once.

    Parameters
    ----------
    client : chromadb client
        The store's client.
    store_name : str
        A validated store name.
    """

    def __init__(self, client: Any, store_name: str) -> None:
        self._client = client
        self.store_name = store_name
        self.name = f"{store_name}-{MANIFEST_SUFFIX}"
        self._base = {
            "format": json.dumps(MANIFEST_FORMAT),
            "name": json.dumps(store_name),
            "mmgap_manifest": store_name,
        }
        self._col = client.get_or_create_collection(
            self.name, embedding_function=None, metadata=self._base
        )
        meta = dict(self._col.metadata or {})
        if set(meta) - _BASE_KEYS or meta.get("format") != self._base["format"]:
            self._migrate(meta)

    # -- reading ---------------------------------------------------------------------------------
    def read(self, keys: Iterable[str] | None = None) -> dict[str, Any]:
        """Decoded manifest values.

        Parameters
        ----------
        keys : iterable of str, optional
            Read only these fields (absent ones are left out). Default: everything, with
            ``format``, ``name`` and the sorted ``modalities`` list.

        Returns
        -------
        dict
        """
        if keys is not None:
            ids = [f"{_FIELD}{k}" for k in keys]
            if not ids:
                return {}
            res = self._col.get(ids=ids, include=["documents", "metadatas"])
        else:
            res = self._col.get(include=["documents", "metadatas"])
        out: dict[str, Any] = {}
        modalities: list[str] = []
        for doc, meta in zip(res["documents"] or [], res["metadatas"] or []):
            meta = meta or {}
            kind = meta.get("kind")
            if kind == "field" and isinstance(meta.get("key"), str):
                out[meta["key"]] = _decode(doc)
            elif kind == "modality" and isinstance(meta.get("modality"), str):
                modalities.append(meta["modality"])
        if keys is None:
            out = {"format": MANIFEST_FORMAT, "name": self.store_name, **out}
            out["modalities"] = sorted(modalities)
        return out

    def modalities(self) -> list[str]:
        """Modalities recorded in the manifest, sorted."""
        # Ids only: the cheapest read Chroma offers (a metadata filter costs more).
        ids = self._col.get(include=[])["ids"]
        return sorted(i[len(_MODALITY) :] for i in ids if i.startswith(_MODALITY))

    # -- writing ---------------------------------------------------------------------------------
    def write(self, fields: Mapping[str, Any]) -> None:
        """Set each field's record (``None`` deletes it); other records are left alone.

        All values are encoded and checked before anything is written.

        Raises
        ------
        ValueError
            For a reserved key, a value that is not JSON-serialisable or is larger than
            :data:`MAX_MANIFEST_VALUE_BYTES` as JSON, or a write Chroma refuses.
        """
        sets: dict[str, str] = {}
        deletes: list[str] = []
        for key, value in fields.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"manifest keys must be non-empty strings, got {key!r}")
            if key in RESERVED_KEYS:
                raise ValueError(f"manifest field {key!r} is maintained by the store")
            if value is None:
                deletes.append(key)
            else:
                sets[key] = _encode(key, value)
        try:
            if sets:
                self._col.upsert(
                    ids=[f"{_FIELD}{k}" for k in sets],
                    embeddings=[_VECTOR] * len(sets),
                    documents=list(sets.values()),
                    metadatas=[{"kind": "field", "key": k} for k in sets],
                )
            if deletes:
                self._col.delete(ids=[f"{_FIELD}{k}" for k in deletes])
        except Exception as exc:
            if unavailable_error(self._client, exc) is not None:
                raise
            raise ValueError(
                f"Chroma refused the manifest update of {sorted([*sets, *deletes])}: {exc}"
            ) from exc

    def add_modalities(self, modalities: Iterable[str]) -> None:
        """Record modalities (idempotent; concurrent writers of other records are unaffected)."""
        mods = sorted(set(modalities))
        if mods:
            self._col.upsert(
                ids=[f"{_MODALITY}{m}" for m in mods],
                embeddings=[_VECTOR] * len(mods),
                documents=[json.dumps(m) for m in mods],
                metadatas=[{"kind": "modality", "modality": m} for m in mods],
            )

    # -- the first layout ------------------------------------------------------------------------
    def _migrate(self, meta: dict[str, Any]) -> None:
        """Move format-1 values out of the collection metadata into records.

        ``add`` never overwrites: when another process has already migrated, or written a newer
        record of a key meanwhile, that record wins over the old value.
        """
        legacy = {k: _decode(v) for k, v in meta.items() if k not in _BASE_KEYS}
        mods = legacy.pop("modalities", None)
        fields = {k: v for k, v in legacy.items() if v is not None}
        ids = [f"{_FIELD}{k}" for k in fields]
        if fields:
            present = set(self._col.get(ids=ids, include=[])["ids"])
            missing = {k: v for k, v in fields.items() if f"{_FIELD}{k}" not in present}
            if missing:
                self._col.add(
                    ids=[f"{_FIELD}{k}" for k in missing],
                    embeddings=[_VECTOR] * len(missing),
                    documents=[json.dumps(v, separators=(",", ":")) for v in missing.values()],
                    metadatas=[{"kind": "field", "key": k} for k in missing],
                )
        listed = {m for m in mods if isinstance(m, str)} if isinstance(mods, list) else set()
        # The first layout could lose a modality from its list (concurrent rewrites); its
        # collections are tagged with the store name, so the list is completed from them.
        prefix = f"{self.store_name}-"
        for col in self._client.list_collections():
            meta = col.metadata or {}
            if meta.get("mmgap_store") == self.store_name and col.name.startswith(prefix):
                listed.add(str(meta.get("mmgap_modality") or col.name[len(prefix) :]))
        self.add_modalities(listed)
        self._col.modify(metadata=self._base)
        logger.info(
            "store %r: manifest migrated to format %d (%d fields)",
            self.store_name,
            MANIFEST_FORMAT,
            len(fields),
        )
