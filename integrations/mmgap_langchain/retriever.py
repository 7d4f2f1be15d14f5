"""LangChain retriever over an mmgap :class:`~mmgap_core.engine.RetrievalEngine`.

The adapter only translates: LangChain calls become ``engine.search`` calls and each
:class:`~mmgap_core.results.Hit` becomes a :class:`~langchain_core.documents.Document`. Ranking,
calibration and storage all live in the engine.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever, LangSmithRetrieverParams
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field

from mmgap_core.engine import RetrievalEngine
from mmgap_core.results import Hit

__all__ = ["CAPTION_KEYS", "MMGapRetriever", "hit_to_document"]

#: Metadata keys whose value becomes an image hit's ``page_content``, first match wins.
CAPTION_KEYS = ("caption", "title", "alt_text", "alt", "description")

# Search options a call may override (``retriever.invoke(q, k=2)``).
_SEARCH_OPTIONS = ("k", "k_per_modality", "filter", "score_threshold", "method")
# Keywords LangChain itself leaves in the kwargs it forwards to the retriever.
_IGNORED_KWARGS = ("verbose",)
_NO_IMAGE = "empty query: give an image path, image bytes or a PIL image"


def _image_mime_type(uri: str | None) -> str | None:
    if not uri:
        return None
    return mimetypes.guess_type(uri)[0]


def _image_label(image: Any) -> str:
    """What callbacks and traces show as the query string of an image query."""
    if isinstance(image, (str, os.PathLike)):
        return f"image: {os.fspath(image)}"
    if isinstance(image, (bytes, bytearray)):
        return f"image: <{len(image)} bytes>"
    return f"image: <{type(image).__name__}>"


def _image_page_content(hit: Hit) -> str:
    for key in CAPTION_KEYS:
        value = hit.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return hit.uri or hit.id


def hit_to_document(hit: Hit) -> Document:
    """One engine hit as a LangChain ``Document``.

    ``page_content`` is the text for a text hit. An image has no text, so an image hit's
    ``page_content`` is the document stored with it if any (LangChain's ``Chroma.add_images``
    layout keeps the base64 image there), else its first caption-like metadata value
    (:data:`CAPTION_KEYS`), else its URI, else its id. ``metadata`` is the stored metadata plus ``modality``, ``relevance_score``
    (calibrated), ``raw_score`` (cosine), ``rank``, ``uri`` and ``mime_type`` (``text/plain`` for
    text, guessed from the URI for images, ``None`` when unknown); these keys win over stored ones.
    """
    if hit.modality == "text":
        content = hit.text if hit.text is not None else ""
        mime = "text/plain"
    else:
        content = _image_page_content(hit) if hit.text is None else hit.text
        mime = _image_mime_type(hit.uri)
    metadata = dict(hit.metadata)
    metadata.update(
        modality=hit.modality,
        relevance_score=hit.score,
        raw_score=hit.raw_score,
        rank=hit.rank,
        uri=hit.uri,
        mime_type=mime,
    )
    return Document(id=hit.id, page_content=content, metadata=metadata)


class MMGapRetriever(BaseRetriever):
    """Calibrated mixed text+image retrieval as a LangChain retriever.

    Text and image hits come back in one ranking whose scores are comparable across modalities
    (see :meth:`RetrievalEngine.search <mmgap_core.engine.RetrievalEngine.search>`). Every search
    option can also be given per call: ``retriever.invoke("query", k=2, filter={...})``.

    Image queries: ``invoke`` takes a string, so use :meth:`invoke_image` / :meth:`ainvoke_image`
    with a path, encoded bytes or a PIL image. They go through ``invoke`` with an ``image=``
    keyword (callbacks and tracing see ``"image: <path>"`` as the query), so
    ``invoke(label, image=...)`` is the same image search; the string is then only a label.

    Attributes:
        engine: the mmgap engine (store + encoder) to search.
        k: number of documents returned.
        k_per_modality: candidates fetched per modality before merging (engine default when None).
        filter: Chroma metadata filter (``where``), e.g. ``{"topic": "food"}``.
        score_threshold: drop documents whose score is below this, in the units of ``method``
            (calibrated z for ``standardize``, cosine for ``raw``).
        method: the engine's fusion method; ``standardize`` is the calibrated one.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: RetrievalEngine
    k: int = Field(default=4, ge=1)
    k_per_modality: int | None = Field(default=None, ge=1)
    filter: dict[str, Any] | None = None
    score_threshold: float | None = None
    method: str = "standardize"

    @classmethod
    def from_store(cls, store: Any, encoder: Any, **kwargs: Any) -> MMGapRetriever:
        """Build the engine over ``store`` (e.g. a ``ChromaStore``) with ``encoder``, then the retriever.

        ``kwargs`` are retriever fields (``k``, ``filter``, ...). Raises ``ValueError`` when the
        store's calibration was fitted for another model than ``encoder``.
        """
        return cls(engine=RetrievalEngine(store, encoder), **kwargs)

    # ------------------------------------------------------------------ search
    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(_SEARCH_OPTIONS) - set(_IGNORED_KWARGS))
        if unknown:
            raise TypeError(
                f"unexpected search argument(s) {unknown}; accepted: "
                f"{', '.join(_SEARCH_OPTIONS)}, image"
            )
        opts = {name: getattr(self, name) for name in _SEARCH_OPTIONS}
        opts.update({n: v for n, v in overrides.items() if n in _SEARCH_OPTIONS})
        return opts

    def _search(self, text: str | None, image: Any, overrides: Mapping[str, Any]) -> list[Document]:
        opts = self._options(overrides)
        result = self.engine.search(
            text,
            image,
            k=opts["k"],
            k_per_modality=opts["k_per_modality"],
            where=opts["filter"],
            method=opts["method"],
        )
        threshold = opts["score_threshold"]
        return [
            hit_to_document(h) for h in result if threshold is None or h.score >= threshold
        ]

    @staticmethod
    def _query(query: str, kwargs: dict[str, Any]) -> tuple[str | None, Any]:
        """(text, image) of one call; an ``image=`` keyword makes it an image query."""
        if "image" not in kwargs:
            return query, None
        image = kwargs.pop("image")
        if image is None:
            raise ValueError(_NO_IMAGE)
        return None, image

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        text, image = self._query(query, kwargs)
        return self._search(text, image, kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        text, image = self._query(query, kwargs)
        # The engine is synchronous (torch + Chroma): keep it off the event loop.
        return await run_in_executor(None, self._search, text, image, kwargs)

    def invoke_image(
        self,
        image: str | os.PathLike | bytes | Any,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Documents for an image query: a file path, encoded image bytes or a PIL image.

        Accepts the same per-call options as ``invoke`` (``k``, ``filter``, ...) and a
        ``RunnableConfig`` (callbacks, tags). A path that does not exist raises
        ``ValueError("query image not found: ...")``.
        """
        if image is None:
            raise ValueError(_NO_IMAGE)
        return self.invoke(_image_label(image), config, image=image, **kwargs)

    async def ainvoke_image(
        self,
        image: str | os.PathLike | bytes | Any,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Async :meth:`invoke_image` (the search runs in a worker thread)."""
        if image is None:
            raise ValueError(_NO_IMAGE)
        return await self.ainvoke(_image_label(image), config, image=image, **kwargs)

    def _get_ls_params(self, **kwargs: Any) -> LangSmithRetrieverParams:
        params = super()._get_ls_params(**kwargs)
        params["ls_vector_store_provider"] = type(self.engine.store).__name__
        if self.engine.encoder is not None:
            params["ls_embedding_provider"] = type(self.engine.encoder).__name__
        model_id = self.engine.model_id
        if model_id:
            params["ls_embedding_model"] = model_id
        return params
