"""LangChain adapter of mmgap: :class:`MMGapRetriever`, calibrated mixed text+image retrieval.

Install with ``pip install "mmgap[langchain,clip,chroma]"``. Importing this package without
LangChain raises an ``ImportError`` that names the extra to install.
"""

try:
    from mmgap_langchain.retriever import CAPTION_KEYS, MMGapRetriever, hit_to_document
except ModuleNotFoundError as exc:  # the extra is not installed
    missing = (exc.name or "").split(".")[0]
    if missing not in ("langchain_core", "pydantic"):
        raise
    raise ImportError(
        f"mmgap_langchain needs LangChain ({missing} is not installed): "
        'pip install "mmgap[langchain]"'
    ) from exc

__all__ = ["CAPTION_KEYS", "MMGapRetriever", "hit_to_document"]
