"""LangChain adapter of mmgap: calibrated mixed text+image retrieval and open_clip embeddings.

* :class:`MMGapRetriever`: a LangChain retriever over an mmgap engine, or over a collection built
  with ``langchain_chroma.Chroma`` (:meth:`MMGapRetriever.from_langchain_chroma`).
* :class:`OpenClipEmbeddings`: open_clip as LangChain ``Embeddings`` with ``embed_image``, so
  ``langchain_chroma`` indexes with the model mmgap searches with.
* :func:`hit_to_document`: one engine hit as a ``Document``.

Install with ``pip install "mmgap[langchain,clip,chroma]"``. Importing this package without
LangChain raises an ``ImportError`` that names the extra to install.
"""

try:
    from mmgap_langchain.documents import CAPTION_KEYS, IMAGE_BASE64_KEY, hit_to_document
    from mmgap_langchain.embeddings import OpenClipEmbeddings
    from mmgap_langchain.retriever import MMGapRetriever
except ModuleNotFoundError as exc:  # the extra is not installed
    missing = (exc.name or "").split(".")[0]
    if missing not in ("langchain_core", "pydantic"):
        raise
    raise ImportError(
        f"mmgap_langchain needs LangChain ({missing} is not installed): "
        'pip install "mmgap[langchain]"'
    ) from exc

__all__ = [
    "CAPTION_KEYS",
    "IMAGE_BASE64_KEY",
    "MMGapRetriever",
    "OpenClipEmbeddings",
    "hit_to_document",
]
