"""LlamaIndex retriever over an mmgap :class:`~mmgap_core.engine.RetrievalEngine`.

The adapter only translates: a ``QueryBundle`` becomes one ``engine.search`` call, LlamaIndex
``MetadataFilters`` become a Chroma ``where`` (:mod:`mmgap_llamaindex.filters`) and each
:class:`~mmgap_core.results.Hit` becomes a ``NodeWithScore``
(:func:`~mmgap_llamaindex.nodes.hit_to_node`).
Ranking, calibration and storage all live in the engine and its store.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.base_multi_modal_retriever import MultiModalRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.indices.query.schema import QueryType
from llama_index.core.schema import IndexNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from mmgap_core.engine import RetrievalEngine
from mmgap_core.fusion import DEFAULT_METHOD, METHODS, check_search_method
from mmgap_llamaindex.filters import combine_where
from mmgap_llamaindex.index_check import check_text_model, index_collections
from mmgap_llamaindex.nodes import hit_to_node

__all__ = ["IMAGE_MODALITIES", "TEXT_MODALITIES", "MMGapLlamaRetriever"]

logger = logging.getLogger(__name__)

#: What ``text_retrieve`` returns: text-only nodes.
TEXT_MODALITIES = ("text",)
#: What the ``*_to_image_retrieve`` methods return: nodes with an image (``ImageNode`` s), i.e.
#: images and multimodal documents.
IMAGE_MODALITIES = ("image", "multimodal")


def _check_top_k(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _encoder_of(model: Any) -> Any:
    # OpenClipMultiModalEmbedding wraps an mmgap encoder; anything else must be one.
    return getattr(model, "encoder", None) or model


def _bundle(query: QueryType, *, image: bool) -> QueryBundle:
    if isinstance(query, QueryBundle):
        return query
    if image:
        return QueryBundle(query_str="", image_path=os.fspath(query))
    return QueryBundle(query_str=query)


class MMGapLlamaRetriever(MultiModalRetriever):
    """Calibrated mixed text+image retrieval as a LlamaIndex multimodal retriever.

    ``retrieve`` returns one ranking of text and image nodes whose scores are comparable across
    modalities (see :meth:`RetrievalEngine.search <mmgap_core.engine.RetrievalEngine.search>`).
    ``text_retrieve``, ``text_to_image_retrieve`` and ``image_to_image_retrieve`` (and their async
    forms) are that same calibrated ranking limited to text nodes (:data:`TEXT_MODALITIES`) or to
    image nodes (:data:`IMAGE_MODALITIES`), so their scores compare with ``retrieve``'s.

    A ``QueryBundle`` with ``image_path`` set is an image query (its ``query_str`` is left to the
    LLM); otherwise ``query_str`` is the text query. The query is always embedded by the engine's
    encoder: a ``QueryBundle.embedding`` is ignored because another retriever may have filled it
    with a different model.

    Parameters
    ----------
    engine : RetrievalEngine
        The mmgap engine (store + encoder) to search.
    similarity_top_k : int, default 4
        Nodes returned by ``retrieve`` and ``text_retrieve``.
    image_similarity_top_k : int, optional
        Nodes returned by the ``*_to_image_retrieve`` methods (default: ``similarity_top_k``).
    k_per_modality : int, optional
        Candidates fetched per modality before merging (engine default if None).
    filters : MetadataFilters, optional
        LlamaIndex metadata filters, translated to a Chroma ``where`` (operators ``==``, ``!=``,
        ``>``, ``>=``, ``<``, ``<=``, ``in``, ``nin``, ``contains``, ``any``, ``all``; conditions
        ``and``/``or``, nested). Checked when the retriever is built.
    where : dict, optional
        A raw Chroma metadata filter, e.g. ``{"topic": "food"}``; combined with ``filters``.
    score_threshold : float, optional
        Drop nodes scored below this, in the unit of ``method`` (:attr:`score_unit`).
    method : str
        The engine's fusion method (default :data:`mmgap_core.fusion.DEFAULT_METHOD`), checked
        when the retriever is built.
    callback_manager, object_map, objects, verbose
        As for any LlamaIndex ``BaseRetriever``.
    """

    def __init__(
        self,
        engine: RetrievalEngine,
        *,
        similarity_top_k: int = 4,
        image_similarity_top_k: int | None = None,
        k_per_modality: int | None = None,
        filters: MetadataFilters | None = None,
        where: Mapping[str, Any] | None = None,
        score_threshold: float | None = None,
        method: str = DEFAULT_METHOD,
        callback_manager: CallbackManager | None = None,
        object_map: dict | None = None,
        objects: list[IndexNode] | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(engine, RetrievalEngine):
            raise ValueError(f"engine must be a mmgap RetrievalEngine, got {type(engine).__name__}")
        _check_top_k("similarity_top_k", similarity_top_k)
        _check_top_k("image_similarity_top_k", image_similarity_top_k, optional=True)
        _check_top_k("k_per_modality", k_per_modality, optional=True)
        check_search_method(method)
        combine_where(where, filters)  # an untranslatable filter fails here, not at first search
        self.engine = engine
        self.similarity_top_k = similarity_top_k
        self.image_similarity_top_k = image_similarity_top_k or similarity_top_k
        self.k_per_modality = k_per_modality
        self.filters = filters
        self.where = dict(where) if where is not None else None
        self.score_threshold = score_threshold
        self.method = method
        super().__init__(
            callback_manager=callback_manager,
            object_map=object_map,
            objects=objects,
            verbose=verbose,
        )

    @property
    def score_unit(self) -> str:
        """What node scores and ``score_threshold`` measure under :attr:`method`."""
        return METHODS[self.method].unit

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_chroma_collections(
        cls,
        chroma_client: Any,
        text_collection: str | None,
        image_collection: str | None,
        encoder: Any,
        *,
        calibrate: bool = True,
        calibration_sample: int = 1000,
        calibration_path: str | os.PathLike | None = None,
        persist_calibration: bool = True,
        auto_recalibrate: bool = False,
        **kwargs: Any,
    ) -> MMGapLlamaRetriever:
        """Calibrated retrieval over the two Chroma collections of a LlamaIndex multimodal index.

        The collections are read in place through ``ForeignLayout.llamaindex`` and never written.
        The calibration is kept next to them, in the collection
        ``<text_collection>-calibration-mmgap`` of the same Chroma, and found again by any later
        retriever over the same collections. No file is written.

        Parameters
        ----------
        chroma_client : chromadb client
            The client holding the collections.
        text_collection, image_collection : str or None
            The collections of the index's text and image ``ChromaVectorStore`` s.
        encoder : Encoder or OpenClipMultiModalEmbedding
            The model that embedded both collections.
        calibrate : bool, default True
            Fit a calibration now (from up to ``calibration_sample`` stored items per modality)
            when none is stored. With ``False`` and none stored, searching raises
            ``NotCalibratedError``.
        calibration_sample : int, default 1000
        calibration_path : str or os.PathLike, optional
            Import this calibration file (``engine.export_calibration`` / ``mmgap calibrate
            --export``) instead; it is then stored next to the collections.
        persist_calibration : bool, default True
            ``False`` keeps the calibration in this process only.
        auto_recalibrate : bool, default False
            Recalibrate when the collections gained a modality or grew since calibration.
        **kwargs
            Constructor options (``similarity_top_k``, ``filters``, ...).

        Returns
        -------
        MMGapLlamaRetriever

        Raises
        ------
        ValueError
            When the stored or imported calibration was fitted for another model
            (``CalibrationFormatError`` for an unreadable file).
        """
        from mmgap_core.store import ForeignLayout

        store = ForeignLayout.llamaindex(
            chroma_client,
            text_collection,
            image_collection,
            persist_calibration=persist_calibration,
        )
        engine = RetrievalEngine(store, _encoder_of(encoder), auto_recalibrate=auto_recalibrate)
        retriever = cls(engine, **kwargs)  # options are checked before any calibration work
        if calibration_path is not None:
            engine.import_calibration(calibration_path)
        elif calibrate and not engine.is_calibrated:
            engine.calibrate(sample=calibration_sample, progress=False)
        return retriever

    @classmethod
    def from_multimodal_index(
        cls,
        index: Any,
        *,
        chroma_client: Any,
        encoder: Any = None,
        **kwargs: Any,
    ) -> MMGapLlamaRetriever:
        """Calibrated retrieval over a ``MultiModalVectorStoreIndex`` on ``ChromaVectorStore`` s.

        Parameters
        ----------
        index : MultiModalVectorStoreIndex
            Its ``vector_store`` and ``image_vector_store`` must be ``ChromaVectorStore`` s.
        chroma_client : chromadb client
            The client holding the index's collections.
        encoder : Encoder, optional
            The model that embedded both collections. Default: the encoder of the index's
            ``image_embed_model``, which must then be an
            :class:`~mmgap_llamaindex.OpenClipMultiModalEmbedding`.
        **kwargs
            Options of :meth:`from_chroma_collections` (``calibrate``, ``persist_calibration``,
            ...) and of the constructor.

        Returns
        -------
        MMGapLlamaRetriever

        Raises
        ------
        ValueError
            When a vector store is not a ``ChromaVectorStore``, the encoder is unknown, or the
            stored texts were not embedded by the encoder (mmgap ranks texts and images in one
            embedding space; checked by re-embedding one stored text node).
        """
        from mmgap_llamaindex.embedding import OpenClipMultiModalEmbedding

        names = index_collections(index)
        image_model = index.image_embed_model
        if encoder is None:
            if not isinstance(image_model, OpenClipMultiModalEmbedding):
                raise ValueError(
                    f"the index's image embed model is {type(image_model).__name__}, not "
                    "OpenClipMultiModalEmbedding: pass encoder= (the model that embedded both "
                    "collections)"
                )
            encoder = image_model.encoder
        encoder = _encoder_of(encoder)
        if isinstance(image_model, OpenClipMultiModalEmbedding) and (
            image_model.model_id != encoder.model_id
        ):
            raise ValueError(
                f"the index's images were embedded with {image_model.model_id!r} but the encoder "
                f"is {encoder.model_id!r}: both modalities must use the same model"
            )
        check_text_model(chroma_client, index, names.get("text"), encoder)
        return cls.from_chroma_collections(
            chroma_client, names.get("text"), names.get("image"), encoder, **kwargs
        )

    # ------------------------------------------------------------------ retrieval
    def _modalities(self, wanted: Sequence[str]) -> list[str]:
        present = self.engine.store.modalities()
        return [m for m in wanted if m in present]

    def _search(
        self,
        query_bundle: QueryBundle,
        *,
        image: bool | None = None,
        modalities: Sequence[str] | None = None,
        k: int | None = None,
    ) -> list[NodeWithScore]:
        """``image``: None reads the query kind from the bundle; ``modalities``: None means all."""
        if image is None:
            image = query_bundle.image_path is not None
        if image and query_bundle.image_path is None:
            raise ValueError(
                "empty query: image_to_image_retrieve needs an image path "
                "(a str or QueryBundle(image_path=...))"
            )
        text, image_path = (
            (None, query_bundle.image_path) if image else (query_bundle.query_str, None)
        )
        mods = None if modalities is None else self._modalities(modalities)
        if mods == []:
            return []  # the store holds none of these modalities
        result = self.engine.search(
            text,
            image_path,
            k=k or self.similarity_top_k,
            k_per_modality=self.k_per_modality,
            where=combine_where(self.where, self.filters),
            method=self.method,
            modalities=mods,
        )
        for note in result.warnings:
            logger.info("mmgap search: %s", note)
        threshold = self.score_threshold
        return [hit_to_node(h) for h in result if threshold is None or h.score >= threshold]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # The engine is synchronous (torch + Chroma): keep it off the event loop.
        return await asyncio.to_thread(self._search, query_bundle)

    def _text_retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(query_bundle, image=False, modalities=TEXT_MODALITIES)

    def _text_to_image_retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(
            query_bundle, image=False, modalities=IMAGE_MODALITIES, k=self.image_similarity_top_k
        )

    def _image_to_image_retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(
            query_bundle, image=True, modalities=IMAGE_MODALITIES, k=self.image_similarity_top_k
        )

    def text_retrieve(self, str_or_query_bundle: QueryType) -> list[NodeWithScore]:
        """Text nodes for a text query: the calibrated ranking, :data:`TEXT_MODALITIES` only."""
        return self._text_retrieve(_bundle(str_or_query_bundle, image=False))

    def text_to_image_retrieve(self, str_or_query_bundle: QueryType) -> list[NodeWithScore]:
        """Image nodes for a text query (images and multimodal documents)."""
        return self._text_to_image_retrieve(_bundle(str_or_query_bundle, image=False))

    def image_to_image_retrieve(self, str_or_query_bundle: QueryType) -> list[NodeWithScore]:
        """Image nodes for an image query: a path, or a ``QueryBundle`` with ``image_path``."""
        return self._image_to_image_retrieve(_bundle(str_or_query_bundle, image=True))

    async def atext_retrieve(self, str_or_query_bundle: QueryType) -> list[NodeWithScore]:
        """Async :meth:`text_retrieve` (the search runs in a worker thread)."""
        return await asyncio.to_thread(self.text_retrieve, str_or_query_bundle)

    async def atext_to_image_retrieve(self, str_or_query_bundle: QueryType) -> list[NodeWithScore]:
        """Async :meth:`text_to_image_retrieve`."""
        return await asyncio.to_thread(self.text_to_image_retrieve, str_or_query_bundle)

    async def aimage_to_image_retrieve(self, str_or_query_bundle: QueryType) -> list[NodeWithScore]:
        """Async :meth:`image_to_image_retrieve`."""
        return await asyncio.to_thread(self.image_to_image_retrieve, str_or_query_bundle)

    async def _atext_to_image_retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._text_to_image_retrieve, query_bundle)

    async def _aimage_to_image_retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._image_to_image_retrieve, query_bundle)

    def retrieve_image(self, image_path: str | os.PathLike) -> list[NodeWithScore]:
        """All nodes (text and image) for an image query given as a file path."""
        return self.retrieve(QueryBundle(query_str="", image_path=os.fspath(image_path)))

    async def aretrieve_image(self, image_path: str | os.PathLike) -> list[NodeWithScore]:
        """Async :meth:`retrieve_image`."""
        return await self.aretrieve(QueryBundle(query_str="", image_path=os.fspath(image_path)))
