"""Vector stores for mmgap. ``base`` is numpy-only; the Chroma backend loads chromadb on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmgap_core.store.base import AddResult, ModalityHits, VectorStore, as_query_matrix

if TYPE_CHECKING:  # pragma: no cover
    from mmgap_core.store.chroma import (
        ChromaStore,
        ForeignLayout,
        detect_layout,
        is_base64_image,
        open_store,
    )

__all__ = [
    "AddResult",
    "ChromaStore",
    "ForeignLayout",
    "ModalityHits",
    "VectorStore",
    "as_query_matrix",
    "detect_layout",
    "is_base64_image",
    "open_store",
]

_CHROMA_NAMES = {"ChromaStore", "ForeignLayout", "detect_layout", "is_base64_image", "open_store"}


def __getattr__(name: str) -> Any:
    # Importing chromadb is slow and optional: only when a Chroma name is asked for.
    if name in _CHROMA_NAMES:
        from mmgap_core.store import chroma

        return getattr(chroma, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
