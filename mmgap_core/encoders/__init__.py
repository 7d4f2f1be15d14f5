"""Encoders: the :class:`Encoder` contract and the open_clip backend.

Importing this package does not import torch or open_clip; ``OpenClipEncoder`` is loaded on first
access so numpy-only users (and other backends) pay nothing for it.

Modules
-------
base
    The contract: :class:`Encoder`, :class:`EmbeddingSet`, :class:`WeightsUnavailableError`.
image_decoding
    Safe decoding of untrusted image inputs (numpy + PIL only).
batching
    Input checks and the threaded decode-ahead pipeline (no torch).
model_names, weights, model_ids
    Which open_clip model and weights to load, whether they are available offline
    (:func:`~mmgap_core.encoders.weights.weights_available_offline`), and the model-id format.
adapter_encoder
    The encoder the LangChain and LlamaIndex embedding adapters wrap.
open_clip
    :class:`OpenClipEncoder` (the only module here that imports torch at import time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmgap_core._lazy import lazy_module
from mmgap_core.encoders.base import (
    MODALITIES,
    EmbeddingSet,
    Encoder,
    ImageInput,
    WeightsUnavailableError,
)

if TYPE_CHECKING:  # pragma: no cover
    from mmgap_core.encoders.open_clip import OpenClipEncoder

__all__ = [
    "MODALITIES",
    "EmbeddingSet",
    "Encoder",
    "ImageInput",
    "OpenClipEncoder",
    "WeightsUnavailableError",
]

_CLIP_LIBRARIES = ("torch", "open_clip", "PIL", "huggingface_hub")


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    if (exc.name or "").split(".")[0] not in _CLIP_LIBRARIES:
        return None
    return (
        f'{exc.name} is not installed: install the open_clip backend with pip install "mmgap[clip]"'
    )


__getattr__, __dir__ = lazy_module(
    __name__,
    {"OpenClipEncoder": ".open_clip"},
    eager=[name for name in __all__ if name != "OpenClipEncoder"],
    missing_hint=_missing_extra,
)
