"""Vector stores for mmgap.

``base`` (result types, the store protocols) and ``errors`` need numpy at most; the Chroma backend
loads chromadb on first use of one of its names:

* :class:`ChromaStore` (``chroma_store``): mmgap's own layout, one collection per modality;
* :class:`ForeignLayout` (``chroma_foreign``): read-only views of LangChain, LlamaIndex and mixed
  collections;
* :func:`detect_layout`, :func:`open_store` (``chroma_detect``): pick the reader for a collection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmgap_core._lazy import lazy_module
from mmgap_core.store.base import AddResult, ModalityHits, VectorStore
from mmgap_core.store.errors import StoreUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from mmgap_core.store.chroma_detect import detect_layout, open_store
    from mmgap_core.store.chroma_foreign import ForeignLayout
    from mmgap_core.store.chroma_store import ChromaStore

__all__ = [
    "AddResult",
    "ChromaStore",
    "ForeignLayout",
    "ModalityHits",
    "StoreUnavailableError",
    "VectorStore",
    "detect_layout",
    "open_store",
]

# Importing chromadb is slow and optional: only when a Chroma name is asked for.
__getattr__, __dir__ = lazy_module(
    __name__,
    {
        "ChromaStore": ".chroma_store",
        "ForeignLayout": ".chroma_foreign",
        "detect_layout": ".chroma_detect",
        "open_store": ".chroma_detect",
    },
    eager=("AddResult", "ModalityHits", "StoreUnavailableError", "VectorStore"),
)
