"""Read-only views of Chroma collections other libraries wrote, with mmgap's store read API.

Three layouts are understood:

* ``"mixed"``: one collection holding all modalities, tagged by metadata (or inferred per item);
* ``"langchain-images"``: LangChain's ``Chroma.add_images`` (base64 image documents) next to
  ``add_texts``;
* ``"llamaindex"``: LlamaIndex's ``MultiModalVectorStoreIndex`` over two ``ChromaVectorStore`` s.

Build a view with :meth:`ForeignLayout.mixed`, :meth:`ForeignLayout.langchain_images` or
:meth:`ForeignLayout.llamaindex`; :func:`mmgap_core.store.chroma_detect.open_store` picks one.

The collections themselves are never written. A calibration saved on a view is kept next to them,
in a small manifest collection ``<collection>-calibration-mmgap`` of the same Chroma
(:func:`calibration_collection_name`), so it survives a restart like an mmgap store's; pass
``persist_calibration=False`` to keep it in the view only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mmgap_core.store.base import AddResult
from mmgap_core.store.chroma_client import (
    MANIFEST_SUFFIX,
    collection_exists,
    collection_space,
    get_collection,
    translate_unavailable,
)
from mmgap_core.store.chroma_manifest import Manifest
from mmgap_core.store.chroma_query import Source
from mmgap_core.store.chroma_reader import StoreReader

__all__ = ["IMAGE_BASE64_REGEX", "LLAMA_NODE_TYPES", "ForeignLayout", "calibration_collection_name"]

logger = logging.getLogger(__name__)

#: Base64 of an image file: a PNG, JPEG, GIF87a/89a, RIFF....WEBP or BMP signature, then base64
#: characters to the end. LangChain's ``add_images`` stores images as such documents; the pattern
#: selects them server-side (``where_document={"$regex": ...}``).
IMAGE_BASE64_REGEX = (
    r"^(iVBORw0KGgo|/9j/|R0lGODdh|R0lGODlh|UklGR[A-Za-z0-9+/]{6}XRUJQ|Qk[0-3])"
    r"[A-Za-z0-9+/]*={0,2}$"
)
#: ``_node_type`` values LlamaIndex's ``ChromaVectorStore`` writes.
LLAMA_NODE_TYPES = ["TextNode", "ImageNode", "Node", "IndexNode"]
_CALIBRATION_KEYS = ("calibration", "layout", "collections")


def _manifest_store_name(collection_name: str) -> str:
    # Not the collection's own name: a `C-mmgap` collection marks `C` as an mmgap store.
    return f"{collection_name}-calibration"


def calibration_collection_name(collection_name: str) -> str:
    """``f"{collection_name}-calibration-mmgap"``: where a view of that collection keeps its
    calibration (for LlamaIndex's pair: named after the text collection, else the image one)."""
    return f"{_manifest_store_name(collection_name)}-{MANIFEST_SUFFIX}"


def _collection_and_space(client: Any, collection_name: str) -> tuple[Any, str]:
    """The existing collection ``collection_name`` and its distance space."""
    with translate_unavailable(client):
        col = get_collection(client, collection_name)
        return col, collection_space(col)


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


class ForeignLayout(StoreReader):
    """Read-only view, with :class:`~mmgap_core.store.chroma_store.ChromaStore`'s read API, of
    collections other libraries wrote.

    Build one with :meth:`mixed`, :meth:`langchain_images` or :meth:`llamaindex`. ``model_id`` is
    ``None`` (the collections do not record one). A calibration saved on the view is written to
    the manifest collection :attr:`calibration_collection` next to the collections (created on
    the first save, never by a constructor), together with the layout and collection names it
    belongs to; with ``persist_calibration=False`` it lives in this object only. Which modalities
    hold items is asked on each :meth:`modalities` call, so items added later (``add_images`` after
    ``add_texts``) are seen; where each modality lives is learned once, at first use.

    Parameters
    ----------
    client : chromadb client
        The client holding the collections.
    layout : str
        ``"mixed"``, ``"langchain-images"`` or ``"llamaindex"``.
    sources : callable
        Returns ``{modality: [Source, ...]}``; called once, at first use.
    description : str
        Names the collections in messages.
    collections : dict of str to str, optional
        ``{role: collection name}`` of the viewed collections, recorded with a persisted
        calibration (a view of other collections ignores it).
    persist_calibration : bool, default True
        Keep a saved calibration in :attr:`calibration_collection`; ``False``: in this object.
    """

    read_only = True

    def __init__(
        self,
        client: Any,
        layout: str,
        sources: Callable[[], dict[str, list[Source]]],
        description: str,
        *,
        collections: Mapping[str, str] | None = None,
        persist_calibration: bool = True,
    ) -> None:
        self._client = client
        self.layout = layout
        self._build = sources
        self._description = description
        self._map: dict[str, list[Source]] | None = None
        self._dim: int | None = None
        self._calibration: dict | None = None
        self.collections = dict(collections or {})
        # Persisting needs a collection to name the calibration's collection after.
        self.persist_calibration = bool(persist_calibration and self.collections)

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def mixed(
        cls,
        client: Any,
        collection_name: str,
        *,
        modality_key: str = "modality",
        persist_calibration: bool = True,
    ) -> ForeignLayout:
        """View of one collection holding all modalities.

        An item's modality is its ``metadata[modality_key]`` tag; an untagged item counts as
        ``"image"`` when it has a URI, else ``"text"``. Tagged items are queried with a
        ``where={modality_key: m}`` filter per modality (correct, but slower than one collection
        per modality); untagged ones are found by one scan of metadatas and URIs at first use and
        queried by id. Open a new view after the collection changes.

        Parameters
        ----------
        client : chromadb client
        collection_name : str
        modality_key : str
            Metadata key of the modality tag.
        persist_calibration : bool, default True
            Keep a saved calibration in ``<collection_name>-calibration-mmgap``.

        Returns
        -------
        ForeignLayout
        """
        col, space = _collection_and_space(client, collection_name)

        def build() -> dict[str, list[Source]]:
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
            out: dict[str, list[Source]] = {}
            for m in sorted({*tagged, *untagged}):
                srcs = []
                if m in tagged:
                    srcs.append(Source(col, where={modality_key: m}, space=space))
                if m in untagged:
                    srcs.append(Source(col, ids=untagged[m], space=space))
                out[m] = srcs
            return out

        return cls(
            client,
            "mixed",
            build,
            f"mixed collection {collection_name!r}",
            collections={"mixed": collection_name},
            persist_calibration=persist_calibration,
        )

    @classmethod
    def langchain_images(
        cls, client: Any, collection_name: str, *, persist_calibration: bool = True
    ) -> ForeignLayout:
        """View of a LangChain ``Chroma`` (langchain-chroma) collection.

        ``add_images`` stores each image's file bytes base64-encoded as the *document* and no
        modality tag; ``add_texts`` stores plain text documents. Images are the documents matching
        :data:`IMAGE_BASE64_REGEX` (selected server-side with ``where_document={"$regex": ...}``,
        texts with ``$not_regex``), so each modality is a filtered query rather than an
        over-fetch. Image hits carry the base64 string as ``document`` (what LangChain returns as
        ``page_content``) and a URI taken from metadata ``uri``/``source``/``path``/``file_path``
        when present. LangChain's default space is l2: scores are still exact cosine.

        Parameters
        ----------
        client : chromadb client
        collection_name : str
            The ``Chroma(collection_name=...)`` of the LangChain vector store.
        persist_calibration : bool, default True
            Keep a saved calibration in ``<collection_name>-calibration-mmgap``.

        Returns
        -------
        ForeignLayout
        """
        col, space = _collection_and_space(client, collection_name)

        def build() -> dict[str, list[Source]]:
            image = Source(
                col,
                where_document={"$regex": IMAGE_BASE64_REGEX},
                describe=_langchain_describe,
                space=space,
            )
            text = Source(
                col,
                where_document={"$not_regex": IMAGE_BASE64_REGEX},
                describe=_langchain_describe,
                space=space,
            )
            return {"image": [image], "text": [text]}

        return cls(
            client,
            "langchain-images",
            build,
            f"LangChain collection {collection_name!r}",
            collections={"langchain": collection_name},
            persist_calibration=persist_calibration,
        )

    @classmethod
    def llamaindex(
        cls,
        client: Any,
        text_collection: str | None,
        image_collection: str | None,
        *,
        persist_calibration: bool = True,
    ) -> ForeignLayout:
        """View of LlamaIndex's ``MultiModalVectorStoreIndex`` on two ``ChromaVectorStore`` s.

        The text store holds TextNodes, the image store ImageNodes. ``ChromaVectorStore.add``
        puts the node text in ``documents`` and the node as JSON in metadata ``_node_content``
        (type in ``_node_type``); an image hit's URI is the node's ``image_path`` (else
        ``image_url``, else metadata ``file_path``). Raw metadata is returned unchanged so an
        adapter can rebuild nodes with ``metadata_dict_to_node``.

        Parameters
        ----------
        client : chromadb client
        text_collection, image_collection : str or None
            The two collections; at least one is needed.
        persist_calibration : bool, default True
            Keep a saved calibration in ``<text_collection>-calibration-mmgap`` (the image
            collection's name when there is no text collection).

        Returns
        -------
        ForeignLayout
        """
        if text_collection is None and image_collection is None:
            raise ValueError("give at least one of text_collection, image_collection")
        with translate_unavailable(client):
            cols = {
                m: get_collection(client, name)
                for m, name in (("text", text_collection), ("image", image_collection))
                if name is not None
            }

        def build() -> dict[str, list[Source]]:
            return {
                m: [Source(col, describe=_llamaindex_describe, space=collection_space(col))]
                for m, col in cols.items()
            }

        names = ", ".join(f"{m}={c.name!r}" for m, c in cols.items())
        return cls(
            client,
            "llamaindex",
            build,
            f"LlamaIndex collections {names}",
            collections={m: c.name for m, c in cols.items()},
            persist_calibration=persist_calibration,
        )

    # -- API ----------------------------------------------------------------------------------
    def _source_map(self) -> dict[str, list[Source]]:
        if self._map is None:
            self._map = self._build()
        return self._map

    def _sources(self, modality: str) -> list[Source]:
        return self._source_map()[modality]

    def _require(self, modality: str) -> list[Source]:
        # A known modality that holds nothing right now is still valid to count and query.
        with translate_unavailable(self._client):
            known = sorted(self._source_map())
        if modality not in known:
            raise ValueError(f"unknown modality {modality!r}; this view has {known}")
        return self._sources(modality)

    def _check_known(self, mods: Any) -> None:
        for m in mods:
            self._require(m)

    @staticmethod
    def _holds_items(src: Source) -> bool:
        if src.is_whole_collection:
            return src.collection.count() > 0
        return bool(src.collection.get(include=[], limit=1, **src.filters(None))["ids"])

    def modalities(self) -> list[str]:
        """Modalities that hold at least one item now (asked anew on each call)."""
        with translate_unavailable(self._client):
            return sorted(
                m for m, srcs in self._source_map().items() if any(map(self._holds_items, srcs))
            )

    @property
    def dim(self) -> int | None:
        """Dimension of the stored embeddings (from one stored item), ``None`` if empty."""
        if self._dim is None:
            with translate_unavailable(self._client):
                for srcs in self._source_map().values():
                    for src in srcs:
                        res = src.collection.get(
                            include=["embeddings"], limit=1, **src.filters(None)
                        )
                        if res["ids"]:
                            self._dim = int(np.asarray(res["embeddings"][0]).shape[-1])
                            return self._dim
        return self._dim

    @property
    def model_id(self) -> str | None:
        """Unknown for foreign layouts: always ``None``."""
        return None

    @property
    def calibration_collection(self) -> str | None:
        """The collection a saved calibration is written to, ``None`` when not persisted."""
        if not self.persist_calibration:
            return None
        return calibration_collection_name(next(iter(self.collections.values())))

    def _manifest(self) -> Manifest:
        key = next(iter(self.collections.values()))
        return Manifest(self._client, _manifest_store_name(key))

    def load_calibration(self) -> dict | None:
        """A copy of the saved ``mmgap.calibration`` dict of these collections, else ``None``.

        Read from :attr:`calibration_collection` on each call (a calibration saved by another
        process is seen), or from this object with ``persist_calibration=False``. One recorded
        for another layout or other collections is ignored, with a log warning.
        """
        if not self.persist_calibration:
            return None if self._calibration is None else dict(self._calibration)
        with translate_unavailable(self._client):
            if not collection_exists(self._client, self.calibration_collection):
                return None
            record = self._manifest().read(_CALIBRATION_KEYS)
        data = record.get("calibration")
        if not isinstance(data, dict):
            return None
        owner = (record.get("layout"), record.get("collections"))
        if owner != (self.layout, self.collections):
            logger.warning(
                "%s: ignoring the calibration in %r, which was saved for layout %r of %r",
                self._description,
                self.calibration_collection,
                owner[0],
                owner[1],
            )
            return None
        return dict(data)

    def save_calibration(self, data: Mapping[str, Any]) -> None:
        """Save a calibration in :attr:`calibration_collection` (created on first use) with the
        layout and collection names, or in this object with ``persist_calibration=False``. The
        viewed collections are never touched. ``ValueError`` for a non-dict or a refused write.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"calibration must be a dict, got {type(data).__name__}")
        if not self.persist_calibration:
            self._calibration = dict(data)
            return
        with translate_unavailable(self._client):
            self._manifest().write(
                {
                    "calibration": dict(data),
                    "layout": self.layout,
                    "collections": dict(self.collections),
                }
            )
        logger.info("%s: calibration saved in %r", self._description, self.calibration_collection)

    def add(self, *args: Any, **kwargs: Any) -> AddResult:
        """Not supported: foreign layouts are read-only (raises ``TypeError``)."""
        raise TypeError(
            f"{self._description} is a read-only {self.layout!r} view; add via its library"
        )

    def __repr__(self) -> str:
        return f"ForeignLayout({self.layout!r}, {self._description})"
