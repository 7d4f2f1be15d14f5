"""LlamaIndex adapter of mmgap: calibrated mixed text+image retrieval and open_clip embeddings.

* :class:`MMGapLlamaRetriever`: a LlamaIndex retriever over an mmgap engine, or over the two
  Chroma collections of a ``MultiModalVectorStoreIndex``.
* :class:`OpenClipMultiModalEmbedding`: open_clip as a LlamaIndex ``MultiModalEmbedding``.

Install with ``pip install "mmgap[llamaindex,clip,chroma]"``. Names load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmgap_llamaindex.embedding import OpenClipMultiModalEmbedding
    from mmgap_llamaindex.retriever import RAW_SCORE_KEY, MMGapLlamaRetriever, hit_to_node

__all__ = ["MMGapLlamaRetriever", "OpenClipMultiModalEmbedding", "RAW_SCORE_KEY", "hit_to_node"]

_MODULE_OF = {
    "MMGapLlamaRetriever": "retriever",
    "RAW_SCORE_KEY": "retriever",
    "hit_to_node": "retriever",
    "OpenClipMultiModalEmbedding": "embedding",
}


def __getattr__(name: str) -> Any:
    # llama_index.core is slow to import; load each module when one of its names is asked for.
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"mmgap_llamaindex.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
