"""LangChain retriever over an mmgap :class:`~mmgap_core.engine.RetrievalEngine`.

The adapter only translates: LangChain calls become ``engine.search`` calls and each
:class:`~mmgap_core.results.Hit` becomes a :class:`~langchain_core.documents.Document`
(:func:`~mmgap_langchain.documents.hit_to_document`). Ranking, calibration and storage all live in
the engine.
"""

from __future__ import annotations

import difflib
import logging
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
from pydantic import ConfigDict, Field, field_validator, model_validator

from mmgap_core.engine import RetrievalEngine
from mmgap_core.fusion import DEFAULT_METHOD, METHODS, check_search_method
from mmgap_langchain.documents import hit_to_document

__all__ = ["MMGapRetriever"]

logger = logging.getLogger(__name__)

# Search options a call may override (``retriever.invoke(q, k=2)``) and ``search_kwargs`` may set.
_SEARCH_OPTIONS = (
    "k",
    "k_per_modality",
    "filter",
    "score_threshold",
    "method",
    "modalities",
    "include_image_bytes",
)
# Keywords LangChain itself leaves in the kwargs it forwards to the retriever.
_IGNORED_KWARGS = ("verbose",)
_NO_IMAGE = "empty query: give an image path, image bytes or a PIL image"


def _image_label(image: Any) -> str:
    """What callbacks and traces show as the query string of an image query."""
    if isinstance(image, (str, os.PathLike)):
        return f"image: {os.fspath(image)}"
    if isinstance(image, (bytes, bytearray)):
        return f"image: <{len(image)} bytes>"
    return f"image: <{type(image).__name__}>"


# Names other retrievers use for these options, for "did you mean" hints.
_ALIASES = {
    "top_k": "k",
    "similarity_top_k": "k",
    "n_results": "k",
    "fetch_k": "k_per_modality",
    "where": "filter",
    "filters": "filter",
}


def _unknown_message(what: str, unknown: list[str], accepted: list[str]) -> str:
    hints = []
    for name in unknown:
        alias = _ALIASES.get(name)
        close = [alias] if alias in accepted else difflib.get_close_matches(name, accepted, n=1)
        if close:
            hints.append(f"{name!r}: did you mean {close[0]!r}?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    return f"unknown {what} {unknown}{hint}; accepted: {', '.join(accepted)}"


def _encoder_of(embedding: Any) -> Any:
    """The mmgap encoder of ``embedding``: an :class:`~mmgap_langchain.OpenClipEmbeddings` (or
    anything with an ``encoder`` attribute), or an mmgap encoder itself."""
    encoder = getattr(embedding, "encoder", None)
    if encoder is not None:
        return encoder
    if all(callable(getattr(embedding, m, None)) for m in ("embed_query_text", "embed_images")):
        return embedding
    raise ValueError(
        f"{type(embedding).__name__} is neither an OpenClipEmbeddings nor an mmgap encoder: pass "
        "the OpenClipEmbeddings the store was built with (mmgap embeds image queries too)"
    )


class MMGapRetriever(BaseRetriever):
    """Calibrated mixed text+image retrieval as a LangChain retriever.

    Text, image (and multimodal) hits come back in one ranking whose scores are comparable across
    modalities (see :meth:`RetrievalEngine.search <mmgap_core.engine.RetrievalEngine.search>`).
    Every search option can also be given per call: ``retriever.invoke("query", k=2,
    filter={...})``, or at construction as ``search_kwargs={"k": 2, ...}``, the way
    ``VectorStore.as_retriever`` takes them. Unknown fields and options are refused.

    Image queries: ``invoke`` takes a string, so use :meth:`invoke_image` / :meth:`ainvoke_image`
    with a path, encoded bytes or a PIL image. They go through ``invoke`` with an ``image=``
    keyword (callbacks and tracing see ``"image: <path>"`` as the query), so
    ``invoke(label, image=...)`` is the same image search; the string is then only a label.

    Attributes
    ----------
    engine : RetrievalEngine
        The mmgap engine (store + encoder) to search.
    k : int, default 4
        Number of documents returned.
    k_per_modality : int, optional
        Candidates fetched per modality before merging (engine default when None).
    filter : dict, optional
        Chroma metadata filter (``where``), e.g. ``{"topic": "food"}``.
    score_threshold : float, optional
        Drop documents scored below this, in the unit of ``method`` (:attr:`score_unit`).
    method : str
        The engine's fusion method (default :data:`mmgap_core.fusion.DEFAULT_METHOD`), checked
        when the retriever is built.
    modalities : list of str, optional
        Return only these modalities (e.g. ``["image"]``), from the same calibrated ranking;
        default all.
    include_image_bytes : bool, default False
        Add each image's base64 file bytes as ``metadata["image_base64"]``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    engine: RetrievalEngine
    k: int = Field(default=4, ge=1)
    k_per_modality: int | None = Field(default=None, ge=1)
    filter: dict[str, Any] | None = None
    score_threshold: float | None = None
    method: str = DEFAULT_METHOD
    modalities: list[str] | None = None
    include_image_bytes: bool = False

    @model_validator(mode="before")
    @classmethod
    def _fold_search_kwargs(cls, data: Any) -> Any:
        """Refuse unknown fields by name; move ``search_kwargs`` entries onto the fields."""
        if not isinstance(data, Mapping):
            return data
        fields = sorted(cls.model_fields)
        unknown = sorted(set(data) - set(fields) - {"search_kwargs"})
        if unknown:
            raise ValueError(_unknown_message("field(s)", unknown, [*fields, "search_kwargs"]))
        search_kwargs = data.get("search_kwargs")
        if search_kwargs is None:
            return data
        if not isinstance(search_kwargs, Mapping):
            raise ValueError(f"search_kwargs must be a dict, got {type(search_kwargs).__name__}")
        unknown = sorted(set(search_kwargs) - set(_SEARCH_OPTIONS))
        if unknown:
            raise ValueError(
                _unknown_message("search_kwargs key(s)", unknown, list(_SEARCH_OPTIONS))
            )
        out = {key: value for key, value in data.items() if key != "search_kwargs"}
        for key, value in search_kwargs.items():
            if key in out and out[key] != value:
                raise ValueError(f"{key} is given twice, as a field and in search_kwargs")
            out[key] = value
        return out

    @field_validator("method")
    @classmethod
    def _valid_method(cls, value: str) -> str:
        return check_search_method(value)

    @property
    def search_kwargs(self) -> dict[str, Any]:
        """The search options in effect, as ``VectorStoreRetriever.search_kwargs`` shows them."""
        return {name: getattr(self, name) for name in _SEARCH_OPTIONS}

    @property
    def score_unit(self) -> str:
        """What ``relevance_score`` and ``score_threshold`` measure under :attr:`method`."""
        return METHODS[self.method].unit

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_store(
        cls, store: Any, encoder: Any, *, auto_recalibrate: bool = False, **kwargs: Any
    ) -> MMGapRetriever:
        """A retriever over a new engine on ``store`` (e.g. a ``ChromaStore``) and ``encoder``.

        Parameters
        ----------
        store : VectorStore
        encoder : Encoder or OpenClipEmbeddings
        auto_recalibrate : bool, default False
            Let the engine recalibrate when the store gained a modality or grew since calibration,
            instead of raising ``NotCalibratedError`` / warning.
        **kwargs
            Retriever fields (``k``, ``filter``, ``search_kwargs``, ...).

        Raises
        ------
        ValueError
            When the store's calibration was fitted for another model than ``encoder``.
        """
        engine = RetrievalEngine(store, _encoder_of(encoder), auto_recalibrate=auto_recalibrate)
        return cls(engine=engine, **kwargs)

    @classmethod
    def from_langchain_chroma(
        cls,
        client: Any,
        collection_name: str,
        embedding: Any,
        *,
        calibrate: bool = True,
        calibration_sample: int = 1000,
        persist_calibration: bool = True,
        auto_recalibrate: bool = False,
        **kwargs: Any,
    ) -> MMGapRetriever:
        """Calibrated retrieval over a collection built with ``langchain_chroma.Chroma``.

        The collection (``add_images`` and ``add_texts``) is read in place, through
        :meth:`ForeignLayout.langchain_images <mmgap_core.store.ForeignLayout.langchain_images>`;
        nothing is re-indexed and the collection is never written. The calibration is kept next
        to it, in the collection ``<collection_name>-calibration-mmgap`` of the same Chroma, so a
        later process finds it.

        Parameters
        ----------
        client : chromadb client
            The client the ``Chroma`` vector store was built on (``Chroma(client=...)``, or a
            ``chromadb.PersistentClient`` on its ``persist_directory``).
        collection_name : str
            The vector store's ``collection_name``.
        embedding : OpenClipEmbeddings or Encoder
            The model that embedded the collection.
        calibrate : bool, default True
            Fit a calibration now (from up to ``calibration_sample`` stored items per modality)
            when none is stored. With ``False`` and none stored, searching raises
            ``NotCalibratedError``.
        calibration_sample : int, default 1000
        persist_calibration : bool, default True
            ``False`` keeps the calibration in this process only.
        auto_recalibrate : bool, default False
            Recalibrate when the collection gained a modality or grew since calibration.
        **kwargs
            Retriever fields (``k``, ``filter``, ``search_kwargs``, ...).

        Returns
        -------
        MMGapRetriever

        Raises
        ------
        ValueError
            When the stored calibration was fitted for another model, or the collection does
            not exist.
        """
        from mmgap_core.store import ForeignLayout

        retriever = cls.from_store(
            ForeignLayout.langchain_images(
                client, collection_name, persist_calibration=persist_calibration
            ),
            embedding,
            auto_recalibrate=auto_recalibrate,
            **kwargs,
        )
        if calibrate and not retriever.engine.is_calibrated:
            retriever.engine.calibrate(sample=calibration_sample, progress=False)
        return retriever

    # ------------------------------------------------------------------ search
    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(_SEARCH_OPTIONS) - set(_IGNORED_KWARGS))
        if unknown:
            raise TypeError(
                f"unexpected search argument(s) {unknown}; accepted: "
                f"{', '.join(_SEARCH_OPTIONS)}, image"
            )
        opts = self.search_kwargs
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
            modalities=opts["modalities"],
        )
        for note in result.warnings:
            logger.info("mmgap search: %s", note)
        threshold = opts["score_threshold"]
        return [
            hit_to_document(h, include_image_bytes=opts["include_image_bytes"])
            for h in result
            if threshold is None or h.score >= threshold
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
