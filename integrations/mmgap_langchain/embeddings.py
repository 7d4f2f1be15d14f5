"""open_clip as LangChain ``Embeddings``, with ``embed_image`` for ``langchain_chroma``.

``langchain_chroma.Chroma(embedding_function=OpenClipEmbeddings(...))`` then indexes texts
(``add_texts``) and images (``add_images``) with the same model mmgap searches with, so the
collection can be wrapped by :meth:`MMGapRetriever.from_langchain_chroma
<mmgap_langchain.MMGapRetriever.from_langchain_chroma>` without re-indexing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from langchain_core.embeddings import Embeddings

from mmgap_core.encoders.adapter_encoder import encoder_for_adapter

__all__ = ["OpenClipEmbeddings"]

logger = logging.getLogger(__name__)


class OpenClipEmbeddings(Embeddings):
    """Text and image embeddings from one open_clip model, for LangChain.

    Build it from an open_clip model name and pretrained tag (or checkpoint file), or around an
    existing mmgap encoder (``encoder=``, e.g. an ``OpenClipEncoder``). Vectors are L2-normalised
    lists of floats. A text or image that cannot be embedded raises ``ValueError`` naming the
    reason (LangChain needs one vector per input, so nothing is skipped).

    Parameters
    ----------
    model_name : str, default "ViT-B-32"
        open_clip architecture (ignored with ``encoder=``).
    pretrained : str or os.PathLike, default "laion2b_s34b_b79k"
        Pretrained tag or local checkpoint file (ignored with ``encoder=``).
    encoder : Encoder, optional
        An existing mmgap encoder to wrap instead of loading a model.
    device : str, optional
        Torch device for a newly loaded model.
    model_config : str or os.PathLike, optional
        open_clip model-config JSON for a custom architecture.
    **encoder_kwargs
        Further ``OpenClipEncoder`` options (``precision``, ``cache_dir``, ``batch_size``, ...).

    Examples
    --------
    >>> clip = OpenClipEmbeddings("ViT-B-32", pretrained="laion2b_s34b_b79k")  # doctest: +SKIP
    >>> store = langchain_chroma.Chroma("photos", embedding_function=clip)  # doctest: +SKIP
    >>> store.add_images(["cat.jpg"], metadatas=[{"title": "a cat"}])  # doctest: +SKIP
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | os.PathLike | None = "laion2b_s34b_b79k",
        *,
        encoder: Any = None,
        device: str | None = None,
        model_config: str | os.PathLike | None = None,
        **encoder_kwargs: Any,
    ) -> None:
        encoder = encoder_for_adapter(
            encoder,
            model_name,
            pretrained,
            device=device,
            model_config=model_config,
            encoder_kwargs=encoder_kwargs,
            adapter="OpenClipEmbeddings",
        )
        self._encoder = encoder

    @property
    def encoder(self) -> Any:
        """The wrapped mmgap encoder (give it to a ``RetrievalEngine``)."""
        return self._encoder

    @property
    def model_id(self) -> str:
        """The encoder's identity (architecture + weights), as mmgap records it."""
        return self._encoder.model_id

    @property
    def dim(self) -> int:
        """Embedding width."""
        return int(self._encoder.dim)

    def __repr__(self) -> str:
        return f"OpenClipEmbeddings(model_id={self.model_id!r}, dim={self.dim})"

    # ------------------------------------------------------------------ texts
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed texts to index (``VectorStore.add_texts``).

        Parameters
        ----------
        texts : list of str

        Returns
        -------
        list of list of float
            One unit vector per text.

        Raises
        ------
        ValueError
            When a text is empty or not a string.
        """
        if not texts:
            return []
        return self._encoder.embed_texts(list(texts), strict=True).vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed a query text (``ValueError`` for an empty one)."""
        return self._encoder.embed_query_text(text).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents` (runs in a worker thread)."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query` (runs in a worker thread)."""
        return await asyncio.to_thread(self.embed_query, text)

    # ------------------------------------------------------------------ images
    def embed_image(self, uris: Sequence[str | os.PathLike | bytes | Any]) -> list[list[float]]:
        """Embed images: what ``langchain_chroma.Chroma.add_images`` and
        ``similarity_search_by_image`` call.

        Parameters
        ----------
        uris : sequence of str, os.PathLike, bytes or PIL.Image.Image
            Image file paths (LangChain passes paths); encoded bytes and PIL images work too.

        Returns
        -------
        list of list of float
            One unit vector per image.

        Raises
        ------
        ValueError
            When an image is missing or cannot be decoded, naming it and the reason.
        """
        if isinstance(uris, (str, os.PathLike, bytes)):
            raise ValueError("embed_image takes a list of images (uris=[path, ...])")
        if not uris:
            return []
        return self._encoder.embed_images(list(uris), strict=True).vectors.tolist()

    async def aembed_image(
        self, uris: Sequence[str | os.PathLike | bytes | Any]
    ) -> list[list[float]]:
        """Async :meth:`embed_image` (runs in a worker thread)."""
        return await asyncio.to_thread(self.embed_image, uris)
