"""Engine hits as LlamaIndex nodes: ``TextNode`` for texts, ``ImageNode`` for images and for
multimodal documents (an image with its text)."""

from __future__ import annotations

import logging
import mimetypes
import re
from typing import Any
from urllib.parse import unquote, urlparse

from llama_index.core.schema import BaseNode, ImageNode, NodeWithScore, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from mmgap_core.results import Hit

__all__ = ["RAW_SCORE_KEY", "hit_to_node"]

logger = logging.getLogger(__name__)

#: Node metadata key holding the raw cosine similarity; hidden from LLM prompts and embeddings.
RAW_SCORE_KEY = "raw_score"
_REMOTE_SCHEMES = ("http", "https", "data")
# A stored document that is base64 data (LangChain's add_images layout), not text.
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_BASE64_MIN_CHARS = 64


def _is_base64(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) >= _BASE64_MIN_CHARS
        and _BASE64.fullmatch(value) is not None
    )


def _hidden(node: BaseNode, key: str) -> None:
    for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
        if key not in keys:
            keys.append(key)


def _image_location(uri: str | None) -> dict[str, str]:
    if not uri:
        return {}
    parsed = urlparse(uri)
    if parsed.scheme in _REMOTE_SCHEMES:
        return {"image_url": uri}
    if parsed.scheme == "file":
        return {"image_path": unquote(parsed.path)}
    return {"image_path": uri}


def _node_from_llamaindex_metadata(hit: Hit) -> BaseNode | None:
    # Collections LlamaIndex wrote keep the whole node as JSON: rebuild it exactly (id, text,
    # relationships, excluded keys, image fields) rather than an approximation.
    if "_node_content" not in hit.metadata:
        return None
    try:
        return metadata_dict_to_node(hit.metadata, text=hit.text)
    except (ValueError, TypeError):
        return None


def _image_node(hit: Hit) -> ImageNode:
    stored_mime = hit.metadata.get("mime_type")
    if isinstance(stored_mime, str) and stored_mime:
        mime = stored_mime
    else:
        mime = mimetypes.guess_type(hit.uri)[0] if hit.uri else None
    # LangChain's add_images layout stores the image itself, base64, as the document.
    image = hit.text if _is_base64(hit.text) else None
    return ImageNode(
        id_=hit.id,
        text="" if image is not None else (hit.text or ""),
        image=image,
        metadata=dict(hit.metadata),
        image_mimetype=mime,
        **_image_location(hit.uri),
    )


def hit_to_node(hit: Hit) -> NodeWithScore:
    """One engine hit as a LlamaIndex ``NodeWithScore``; ``score`` is the calibrated score.

    Parameters
    ----------
    hit : Hit
        A hit of ``RetrievalEngine.search``.

    Returns
    -------
    NodeWithScore
        A hit from a collection LlamaIndex wrote is rebuilt as the node LlamaIndex stored.
        Otherwise a text hit becomes a ``TextNode``; an image hit an ``ImageNode`` (``image_path``
        from a file URI, ``image_url`` from an http(s)/data URI, ``image_mimetype`` from the
        stored ``mime_type`` or guessed from the URI, ``image`` when the store keeps the image as
        base64, as LangChain's ``add_images`` does); a multimodal hit an ``ImageNode`` that also
        carries the document's text. The node id is the store id and the metadata the stored
        metadata. Every node's metadata gets ``modality`` and ``raw_score`` (the cosine);
        ``raw_score`` is excluded from LLM prompts and embeddings.
    """
    node = _node_from_llamaindex_metadata(hit)
    if node is None:
        if hit.modality == "text":
            node = TextNode(id_=hit.id, text=hit.text or "", metadata=dict(hit.metadata))
        else:  # "image", "multimodal" and any other modality with an image
            node = _image_node(hit)
    node.metadata["modality"] = hit.modality
    node.metadata[RAW_SCORE_KEY] = hit.raw_score
    _hidden(node, RAW_SCORE_KEY)
    return NodeWithScore(node=node, score=hit.score)
