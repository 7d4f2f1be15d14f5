"""Read-only views of Chroma collections other libraries wrote, with mmgap's store read API.

Three layouts are understood:

* ``"mixed"``: one collection holding all modalities, tagged by metadata (or inferred per item);
* ``"langchain-images"``: LangChain's ``Chroma.add_images`` (base64 image documents) next to
  ``add_texts``;
* ``"llamaindex"``: LlamaIndex's ``MultiModalVectorStoreIndex`` over two ``ChromaVectorStore`` s.

Build a view with :meth:`ForeignLayout.mixed`, :meth:`ForeignLayout.langchain_images` or
:meth:`ForeignLayout.llamaindex`; :func:`mmgap_core.store.chroma_detect.open_store` picks one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mmgap_core.store.base import AddResult
from mmgap_core.store.chroma_client import collection_space, get_collection, translate_unavailable
from mmgap_core.store.chroma_query import Source
from mmgap_core.store.chroma_reader import StoreReader

__all__ = ["IMAGE_BASE64_REGEX", "LLAMA_NODE_TYPES", "ForeignLayout"]

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

    Build one with :meth:`mixed`, :meth:`langchain_images` or :meth:`llamaindex`. It has no
    manifest: ``model_id`` is ``None``, and a calibration saved on it lives in this object only
    (export it with ``RetrievalEngine.export_calibration`` to keep it). What the view learns about
    the collections (modalities, dimension) is learned once, at first use.

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
    """

    read_only = True

    def __init__(
        self,
        client: Any,
        layout: str,
        sources: Callable[[], dict[str, list[Source]]],
        description: str,
    ) -> None:
        self._client = client
        self.layout = layout
        self._build = sources
        self._description = description
        self._map: dict[str, list[Source]] | None = None
        self._dim: int | None = None
        self._calibration: dict | None = None

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def mixed(
        cls, client: Any, collection_name: str, *, modality_key: str = "modality"
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

        Returns
        -------
        ForeignLayout
        """
        with translate_unavailable(client):
            col = get_collection(client, collection_name)
            space = collection_space(col)

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

        return cls(client, "mixed", build, f"mixed collection {collection_name!r}")

    @classmethod
    def langchain_images(cls, client: Any, collection_name: str) -> ForeignLayout:
        """View of a LangChain ``Chroma`` (langchain-chroma) collection.

        ``add_images`` stores each image's file bytes base64-encoded as the *document* and no
        modality tag; ``add_texts`` stores plain text documents. Images are the documents matching
        :data:`IMAGE_BASE64_REGEX` (selected server-side with ``where_document={"$regex": ...}``,
        texts with ``$not_regex``), so each modality is a filtered query rather than an
        over-fetch. Image hits carry the base64 string as ``document`` (what LangChain returns as
        ``page_content``) and a URI taken from metadata ``uri``/``source``/``path``/``file_path``
        when present. LangChain's default space is l2: scores are still exact cosine.

        Returns
        -------
        ForeignLayout
        """
        with translate_unavailable(client):
            col = get_collection(client, collection_name)
            space = collection_space(col)

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
        return cls(client, "llamaindex", build, f"LlamaIndex collections {names}")

    # -- API ----------------------------------------------------------------------------------
    def _source_map(self) -> dict[str, list[Source]]:
        if self._map is None:
            self._map = self._build()
        return self._map

    def _sources(self, modality: str) -> list[Source]:
        return self._source_map()[modality]

    def modalities(self) -> list[str]:
        """Modalities found in the collection(s)."""
        with translate_unavailable(self._client):
            return sorted(self._source_map())

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

    def load_calibration(self) -> dict | None:
        """The calibration saved on this view with :meth:`save_calibration`, else ``None``."""
        return None if self._calibration is None else dict(self._calibration)

    def save_calibration(self, data: Mapping[str, Any]) -> None:
        """Keep a calibration in this object: collections others wrote are never modified.

        Persist it with ``RetrievalEngine.export_calibration`` and load it again with
        ``import_calibration``.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"calibration must be a dict, got {type(data).__name__}")
        self._calibration = dict(data)

    def add(self, *args: Any, **kwargs: Any) -> AddResult:
        """Not supported: foreign layouts are read-only (raises ``TypeError``)."""
        raise TypeError(
            f"{self._description} is a read-only {self.layout!r} view; add via its library"
        )

    def __repr__(self) -> str:
        return f"ForeignLayout({self.layout!r}, {self._description})"
