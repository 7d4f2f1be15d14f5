"""Compatibility path: the Chroma backend's public names, from the modules that now hold them.

New code imports from :mod:`mmgap_core.store` (lazy) or from the modules themselves:
``chroma_store`` (own layout), ``chroma_foreign`` (foreign layouts), ``chroma_detect``
(layout detection), ``chroma_client`` (clients and collections), ``chroma_query`` (querying),
``chroma_manifest`` (the manifest).
"""

from __future__ import annotations

from mmgap_core.store.chroma_detect import detect_layout, open_store
from mmgap_core.store.chroma_foreign import IMAGE_BASE64_REGEX, ForeignLayout
from mmgap_core.store.chroma_manifest import MAX_MANIFEST_VALUE_BYTES
from mmgap_core.store.chroma_store import ChromaStore
from mmgap_core.store.errors import StoreUnavailableError

__all__ = [
    "IMAGE_BASE64_REGEX",
    "MAX_MANIFEST_VALUE_BYTES",
    "ChromaStore",
    "ForeignLayout",
    "StoreUnavailableError",
    "detect_layout",
    "open_store",
]
