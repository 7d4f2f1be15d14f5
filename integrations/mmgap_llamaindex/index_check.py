"""What :meth:`MMGapLlamaRetriever.from_multimodal_index` reads from a LlamaIndex index, through
public API only: the Chroma collections behind it, and whether its texts share the image model.

A ``MultiModalVectorStoreIndex`` exposes its image model (``image_embed_model``) but not its text
model. mmgap ranks texts and images in one embedding space, so both must come from one model; the
texts' model is checked by what it produced: one stored text node, embedded again by the encoder,
must find itself at cosine 1.
"""

from __future__ import annotations

import logging
from typing import Any

from llama_index.core.schema import MetadataMode
from llama_index.core.vector_stores.utils import metadata_dict_to_node

__all__ = ["check_text_model", "index_collections"]

logger = logging.getLogger(__name__)

#: Cosine at which a stored text node, embedded again, counts as embedded by the same model.
SAME_MODEL_COSINE = 0.99
_PROBE_K = 50


def index_collections(index: Any) -> dict[str, str]:
    """``{"text": name, "image": name}`` of the Chroma collections behind ``index``.

    Parameters
    ----------
    index : MultiModalVectorStoreIndex

    Returns
    -------
    dict of str to str

    Raises
    ------
    ValueError
        When a vector store of the index is not a ``ChromaVectorStore``.
    """
    names = {}
    for modality, store in (("text", index.vector_store), ("image", index.image_vector_store)):
        if store is None:
            continue
        if store.class_name() != "ChromaVectorStore":
            raise ValueError(
                f"the index's {modality} vector store is a {store.class_name()}; mmgap reads "
                "ChromaVectorStore only"
            )
        names[modality] = store.client.name  # ChromaVectorStore.client is its collection
    return names


def _probe_node(collection: Any) -> tuple[str, str] | None:
    """(id, text as LlamaIndex embedded it) of one stored text node, or ``None``."""
    res = collection.get(limit=1, include=["documents", "metadatas"])
    if not res["ids"]:
        return None
    try:
        node = metadata_dict_to_node(res["metadatas"][0] or {}, text=res["documents"][0])
    except (ValueError, TypeError, KeyError):
        return None
    content = node.get_content(metadata_mode=MetadataMode.EMBED)
    return (res["ids"][0], content) if content.strip() else None


def check_text_model(client: Any, index: Any, text_collection: str | None, encoder: Any) -> None:
    """Raise ``ValueError`` unless ``encoder`` embedded the index's stored text nodes.

    Parameters
    ----------
    client : chromadb client
    index : MultiModalVectorStoreIndex
    text_collection : str or None
        The text collection's name (nothing to check when ``None`` or empty).
    encoder : Encoder
    """
    if text_collection is None:
        return
    probe = _probe_node(index.vector_store.client)
    if probe is None:
        return
    from mmgap_core.engine import RetrievalEngine
    from mmgap_core.store import ForeignLayout

    probe_id, content = probe
    view = ForeignLayout.llamaindex(client, text_collection, None, persist_calibration=False)
    hits = RetrievalEngine(view, encoder).search(
        text=content, k=_PROBE_K, method="raw", modalities=["text"]
    )
    score = next((h.raw_score for h in hits if h.id == probe_id), None)
    logger.debug("text model check: node %s found again at cosine %s", probe_id, score)
    if score is None or score < SAME_MODEL_COSINE:
        raise ValueError(
            f"the index's texts were not embedded by {encoder.model_id!r} (a stored text node, "
            f"embedded again, scores {'nothing' if score is None else f'{score:.3f}'} against "
            "itself): mmgap ranks texts and images in one embedding space, so both must use the "
            "same model; pass encoder= the model that embedded both collections"
        )
