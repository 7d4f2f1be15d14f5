"""LangChain adapter of mmgap: :class:`MMGapRetriever`, calibrated mixed text+image retrieval.

Install with ``pip install "mmgap[langchain,clip,chroma]"``.
"""

from mmgap_langchain.retriever import CAPTION_KEYS, MMGapRetriever, hit_to_document

__all__ = ["CAPTION_KEYS", "MMGapRetriever", "hit_to_document"]
