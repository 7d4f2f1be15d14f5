"""Tell Chroma layouts apart and open a collection with the reader its layout needs."""

from __future__ import annotations

import logging
from typing import Any

from mmgap_core.store.chroma_client import (
    MANIFEST_SUFFIX,
    collection_exists,
    get_collection,
    translate_unavailable,
)
from mmgap_core.store.chroma_foreign import IMAGE_BASE64_REGEX, LLAMA_NODE_TYPES, ForeignLayout
from mmgap_core.store.chroma_store import ChromaStore

__all__ = ["detect_layout", "open_store"]

logger = logging.getLogger(__name__)


def _is_mmgap_collection(name: str, meta: dict) -> bool:
    if "mmgap_store" in meta or "mmgap_manifest" in meta:
        return True
    # A manifest of mmgap's first layout: the store data sat in the collection metadata.
    return name.endswith(f"-{MANIFEST_SUFFIX}") and "modalities" in meta


def detect_layout(client: Any, collection_name: str) -> str:
    """Which layout ``collection_name`` is.

    Parameters
    ----------
    client : chromadb client
    collection_name : str
        An mmgap store name (its ``-mmgap`` manifest exists), any of a store's collections, or a
        collection another library wrote.

    Returns
    -------
    str
        ``"mmgap"``, ``"mixed"``, ``"langchain-images"`` or ``"llamaindex"``. Collections of other
        libraries are told apart by content: LlamaIndex nodes carry ``_node_type`` metadata,
        LangChain images are base64-image documents; anything else is read as a mixed
        collection (tagged or inferred per item).

    Raises
    ------
    ValueError
        When no such collection (or store) exists.
    """
    with translate_unavailable(client):
        if collection_exists(client, f"{collection_name}-{MANIFEST_SUFFIX}"):
            return "mmgap"
        col = get_collection(client, collection_name)
        if _is_mmgap_collection(collection_name, col.metadata or {}):
            return "mmgap"
        if col.get(where={"_node_type": {"$in": LLAMA_NODE_TYPES}}, limit=1, include=[])["ids"]:
            return "llamaindex"
        if col.get(where_document={"$regex": IMAGE_BASE64_REGEX}, limit=1, include=[])["ids"]:
            return "langchain-images"
        return "mixed"


def open_store(client: Any, collection_name: str) -> ChromaStore | ForeignLayout:
    """Open ``collection_name`` with the reader its :func:`detect_layout` layout needs.

    A LlamaIndex collection opened alone becomes a one-modality view (``"image"`` when it holds
    ImageNodes, else ``"text"``); use :meth:`ForeignLayout.llamaindex` to pair both stores.

    Returns
    -------
    ChromaStore or ForeignLayout
    """
    layout = detect_layout(client, collection_name)
    with translate_unavailable(client):
        if layout == "mmgap":
            if collection_exists(client, f"{collection_name}-{MANIFEST_SUFFIX}"):
                return ChromaStore(client, collection_name)
            meta = get_collection(client, collection_name).metadata or {}
            store = meta.get("mmgap_store") or meta.get("mmgap_manifest")
            if store is None:  # a manifest of the first layout
                store = collection_name[: -len(MANIFEST_SUFFIX) - 1]
            return ChromaStore(client, str(store))
        if layout == "llamaindex":
            col = get_collection(client, collection_name)
            has_images = col.get(where={"_node_type": "ImageNode"}, limit=1, include=[])["ids"]
            if has_images:
                return ForeignLayout.llamaindex(client, None, collection_name)
            return ForeignLayout.llamaindex(client, collection_name, None)
        if layout == "langchain-images":
            return ForeignLayout.langchain_images(client, collection_name)
        return ForeignLayout.mixed(client, collection_name)
