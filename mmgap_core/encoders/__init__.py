"""Encoders: the :class:`Encoder` contract and the open_clip backend.

Importing this package does not import torch or open_clip; ``OpenClipEncoder`` is loaded on first
access so numpy-only users (and other backends) pay nothing for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmgap_core.encoders.base import (
    MODALITIES,
    EmbeddingSet,
    Encoder,
    ImageInput,
    WeightsUnavailableError,
)

if TYPE_CHECKING:
    from mmgap_core.encoders.open_clip import OpenClipEncoder

__all__ = [
    "MODALITIES",
    "EmbeddingSet",
    "Encoder",
    "ImageInput",
    "OpenClipEncoder",
    "WeightsUnavailableError",
]


def __getattr__(name: str) -> Any:
    if name == "OpenClipEncoder":
        from mmgap_core.encoders.open_clip import OpenClipEncoder

        return OpenClipEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
