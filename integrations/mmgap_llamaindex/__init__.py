"""LlamaIndex adapter of mmgap: calibrated mixed text+image retrieval and open_clip embeddings.

* :class:`MMGapLlamaRetriever`: a LlamaIndex ``MultiModalRetriever`` over an mmgap engine, or
  over the two Chroma collections of a ``MultiModalVectorStoreIndex``.
* :class:`OpenClipMultiModalEmbedding`: open_clip as a LlamaIndex ``MultiModalEmbedding``.
* :func:`metadata_filters_to_where`: LlamaIndex ``MetadataFilters`` as a Chroma ``where``.
* :func:`hit_to_node`: one engine hit as a ``NodeWithScore``.

Install with ``pip install "mmgap[llamaindex,clip,chroma]"``. Names load on first access
(``llama_index.core`` is slow to import); importing this package without LlamaIndex raises an
``ImportError`` that names the extra to install.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from mmgap_core._lazy import lazy_module

if TYPE_CHECKING:  # pragma: no cover
    from mmgap_llamaindex.embedding import OpenClipMultiModalEmbedding
    from mmgap_llamaindex.filters import metadata_filters_to_where
    from mmgap_llamaindex.nodes import RAW_SCORE_KEY, hit_to_node
    from mmgap_llamaindex.retriever import IMAGE_MODALITIES, TEXT_MODALITIES, MMGapLlamaRetriever

_INSTALL = 'pip install "mmgap[llamaindex]"'


def _llama_index_missing() -> bool:
    try:
        return importlib.util.find_spec("llama_index.core") is None
    except (ImportError, ValueError):  # a parent package is missing or blocked
        return True


if _llama_index_missing():
    raise ImportError(f"mmgap_llamaindex needs LlamaIndex (llama_index.core): {_INSTALL}")


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    if (exc.name or "").split(".")[0] != "llama_index":
        return None
    return f"mmgap_llamaindex needs LlamaIndex ({exc.name} is not installed): {_INSTALL}"


__all__ = [
    "IMAGE_MODALITIES",
    "MMGapLlamaRetriever",
    "OpenClipMultiModalEmbedding",
    "RAW_SCORE_KEY",
    "TEXT_MODALITIES",
    "hit_to_node",
    "metadata_filters_to_where",
]

__getattr__, __dir__ = lazy_module(
    __name__,
    {
        "MMGapLlamaRetriever": "mmgap_llamaindex.retriever",
        "IMAGE_MODALITIES": "mmgap_llamaindex.retriever",
        "TEXT_MODALITIES": "mmgap_llamaindex.retriever",
        "RAW_SCORE_KEY": "mmgap_llamaindex.nodes",
        "hit_to_node": "mmgap_llamaindex.nodes",
        "metadata_filters_to_where": "mmgap_llamaindex.filters",
        "OpenClipMultiModalEmbedding": "mmgap_llamaindex.embedding",
    },
    missing_hint=_missing_extra,
)
