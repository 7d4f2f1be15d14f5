"""open_clip as a LlamaIndex ``MultiModalEmbedding``.

LlamaIndex's own ``ClipEmbedding`` needs OpenAI's ``clip`` package, which is not on PyPI. This
class wraps mmgap's :class:`~mmgap_core.encoders.open_clip.OpenClipEncoder` instead, so the same
model embeds LlamaIndex nodes and mmgap queries.
"""

from __future__ import annotations

import asyncio
import logging
import os
from io import BytesIO
from typing import Any

from llama_index.core.base.embeddings.base import DEFAULT_EMBED_BATCH_SIZE, Embedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MultiModalEmbedding
from llama_index.core.schema import ImageType
from pydantic import Field, PrivateAttr

from mmgap_core.encoders.adapter_encoder import encoder_for_adapter

__all__ = ["OpenClipMultiModalEmbedding"]

logger = logging.getLogger(__name__)


def _image_input(image: ImageType) -> Any:
    # LlamaIndex hands images over as a path or a BytesIO (ImageNode.resolve_image).
    if isinstance(image, BytesIO):
        return image.getvalue()
    return image


class OpenClipMultiModalEmbedding(MultiModalEmbedding):
    """Text and image embeddings from one open_clip model, for LlamaIndex.

    Build it from an open_clip model name and pretrained tag (or checkpoint file), or around an
    existing encoder (``encoder=``, anything implementing mmgap's ``Encoder`` plus
    ``embed_query_text`` / ``embed_query_image``, e.g. ``OpenClipEncoder``). Vectors are
    L2-normalised. Texts or images that cannot be embedded raise ``ValueError`` naming the reason.

    Parameters
    ----------
    model_name : str, default "ViT-B-32"
        open_clip architecture (ignored with ``encoder=``).
    pretrained : str or os.PathLike, default "laion2b_s34b_b79k"
        Pretrained tag or local checkpoint file (ignored with ``encoder=``).
    encoder : Encoder, optional
        An existing encoder to wrap instead of loading a model.
    device : str, optional
        Torch device for a newly loaded model.
    model_config : str or os.PathLike, optional
        open_clip model-config JSON for a custom architecture.
    embed_batch_size : int
        LlamaIndex batch size (texts or images per encoder call).
    callback_manager : CallbackManager, optional
    **encoder_kwargs
        Further ``OpenClipEncoder`` options (``precision``, ``cache_dir``, ...).

    Attributes
    ----------
    model_name : str
        The open_clip architecture name.
    model_id : str
        The encoder's full identity (architecture + weights), as mmgap records it.
    """

    model_id: str = Field(default="", description="Encoder identity (architecture + weights).")
    pretrained: str | None = Field(default=None, description="Pretrained tag or checkpoint.")
    _encoder: Any = PrivateAttr()

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | os.PathLike | None = "laion2b_s34b_b79k",
        *,
        encoder: Any = None,
        device: str | None = None,
        model_config: str | os.PathLike | None = None,
        embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        callback_manager: CallbackManager | None = None,
        **encoder_kwargs: Any,
    ) -> None:
        encoder = encoder_for_adapter(
            encoder,
            model_name,
            pretrained,
            device=device,
            model_config=model_config,
            encoder_kwargs=encoder_kwargs,
            adapter="OpenClipMultiModalEmbedding",
        )
        resolved = getattr(encoder, "pretrained", None)
        super().__init__(
            model_name=getattr(encoder, "model_name", encoder.model_id),
            model_id=encoder.model_id,
            pretrained=None if resolved is None else os.fspath(resolved),
            embed_batch_size=embed_batch_size,
            callback_manager=callback_manager,
        )
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        return "OpenClipMultiModalEmbedding"

    @property
    def encoder(self) -> Any:
        """The wrapped mmgap encoder (give it to a ``RetrievalEngine``)."""
        return self._encoder

    @property
    def dim(self) -> int:
        """Embedding width."""
        return int(self._encoder.dim)

    # ------------------------------------------------------------------ text
    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encoder.embed_query_text(query).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        # strict: LlamaIndex needs one vector per input, so a bad text is an error, not a skip.
        return self._encoder.embed_texts(list(texts), strict=True).vectors.tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    # ------------------------------------------------------------------ image
    def _get_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return self._encoder.embed_query_image(_image_input(img_file_path)).tolist()

    async def _aget_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return await asyncio.to_thread(self._get_image_embedding, img_file_path)

    def _get_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        images = [_image_input(p) for p in img_file_paths]
        return self._encoder.embed_images(images, strict=True).vectors.tolist()

    async def _aget_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_image_embeddings, img_file_paths)
