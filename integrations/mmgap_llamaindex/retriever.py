"""LlamaIndex retriever over an mmgap :class:`~mmgap_core.engine.RetrievalEngine`.

The adapter only translates: a ``QueryBundle`` becomes one ``engine.search`` call and each
:class:`~mmgap_core.results.Hit` becomes a ``NodeWithScore``. Ranking, calibration and storage all
live in the engine and its store.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlparse

from llama_index.core.callbacks import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import (
    BaseNode,
    ImageNode,
    IndexNode,
    NodeWithScore,
    QueryBundle,
    TextNode,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from mmgap_core.engine import RetrievalEngine
from mmgap_core.results import Hit

__all__ = ["MMGapLlamaRetriever", "RAW_SCORE_KEY", "hit_to_node"]

#: Node metadata key holding the raw cosine similarity; hidden from LLM prompts and embeddings.
RAW_SCORE_KEY = "raw_score"
_REMOTE_SCHEMES = ("http", "https", "data")


def _hidden(node: BaseNode, key: str) -> None:
    for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
        if key not in keys:
            keys.append(key)


def _image_location(uri: str | None) -> dict[str, str | None]:
    if not uri:
        return {}
    parsed = urlparse(uri)
    if parsed.scheme in _REMOTE_SCHEMES:
        return {"image_url": uri}
    if parsed.scheme == "file":
        return {"image_path": unquote(parsed.path)}
    return {"image_path": uri}


def _node_from_llamaindex_metadata(hit: Hit) -> BaseNode | None:
    # Collections LlamaIndex wrote keep the whole node as JSON: rebuild it exactly (id, text,
    # relationships, excluded keys, image fields) rather than an approximation.
    if "_node_content" not in hit.metadata:
        return None
    try:
        return metadata_dict_to_node(hit.metadata, text=hit.text)
    except (ValueError, TypeError):
        return None


def hit_to_node(hit: Hit) -> NodeWithScore:
    """One engine hit as a LlamaIndex ``NodeWithScore``; ``score`` is the calibrated score.

    A hit from a collection LlamaIndex wrote is rebuilt as the node LlamaIndex stored. Otherwise a
    text hit becomes a ``TextNode`` and an image hit an ``ImageNode`` (``image_path`` from a file
    URI, ``image_url`` from an http(s)/data URI, ``image_mimetype`` guessed from it), with the
    store id as node id and the stored metadata. Every node's metadata gets ``modality`` and
    ``raw_score`` (the cosine); ``raw_score`` is excluded from LLM prompts and embeddings.
    """
    node = _node_from_llamaindex_metadata(hit)
    if node is None:
        metadata = dict(hit.metadata)
        if hit.modality == "image":
            node = ImageNode(
                id_=hit.id,
                text=hit.text or "",
                metadata=metadata,
                image_mimetype=mimetypes.guess_type(hit.uri)[0] if hit.uri else None,
                **_image_location(hit.uri),
            )
        else:
            node = TextNode(id_=hit.id, text=hit.text or "", metadata=metadata)
    node.metadata["modality"] = hit.modality
    node.metadata[RAW_SCORE_KEY] = hit.raw_score
    _hidden(node, RAW_SCORE_KEY)
    return NodeWithScore(node=node, score=hit.score)


def _check_top_k(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class MMGapLlamaRetriever(BaseRetriever):
    """Calibrated mixed text+image retrieval as a LlamaIndex retriever.

    One ranking of text and image nodes whose scores are comparable across modalities (see
    :meth:`RetrievalEngine.search <mmgap_core.engine.RetrievalEngine.search>`).

    A ``QueryBundle`` with ``image_path`` set is an image query (its ``query_str`` is left to the
    LLM); otherwise ``query_str`` is the text query. The query is always embedded by the engine's
    encoder: a ``QueryBundle.embedding`` is ignored because another retriever may have filled it
    with a different model.

    Args:
        engine: the mmgap engine (store + encoder) to search.
        similarity_top_k: number of nodes returned.
        k_per_modality: candidates fetched per modality before merging (engine default if None).
        where: Chroma metadata filter, e.g. ``{"topic": "food"}``.
        score_threshold: drop nodes scored below this, in the units of ``method`` (calibrated z
            for ``standardize``, cosine for ``raw``).
        method: the engine's fusion method; ``standardize`` is the calibrated one.
        callback_manager, object_map, objects, verbose: as for any LlamaIndex ``BaseRetriever``.
    """

    def __init__(
        self,
        engine: RetrievalEngine,
        *,
        similarity_top_k: int = 4,
        k_per_modality: int | None = None,
        where: Mapping[str, Any] | None = None,
        score_threshold: float | None = None,
        method: str = "standardize",
        callback_manager: CallbackManager | None = None,
        object_map: dict | None = None,
        objects: list[IndexNode] | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(engine, RetrievalEngine):
            raise ValueError(f"engine must be a mmgap RetrievalEngine, got {type(engine).__name__}")
        _check_top_k("similarity_top_k", similarity_top_k)
        _check_top_k("k_per_modality", k_per_modality, optional=True)
        self.engine = engine
        self.similarity_top_k = similarity_top_k
        self.k_per_modality = k_per_modality
        self.where = dict(where) if where is not None else None
        self.score_threshold = score_threshold
        self.method = method
        super().__init__(
            callback_manager=callback_manager,
            object_map=object_map,
            objects=objects,
            verbose=verbose,
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_chroma_collections(
        cls,
        chroma_client: Any,
        text_collection: str | None,
        image_collection: str | None,
        encoder: Any,
        *,
        calibration_path: str | os.PathLike | None = None,
        calibrate: bool = True,
        calibration_sample: int = 1000,
        **kwargs: Any,
    ) -> MMGapLlamaRetriever:
        """Calibrated retrieval over the two Chroma collections of a LlamaIndex multimodal index.

        The collections are read through ``ForeignLayout.llamaindex`` (read-only). LlamaIndex
        stores no calibration, so it is kept by this retriever's engine: loaded from
        ``calibration_path`` when that file exists (``ValueError`` if it was fitted for another
        model), else fitted now when ``calibrate`` is true (from a sample of ``calibration_sample``
        stored items per modality) and written to ``calibration_path`` if given. With
        ``calibrate=False`` and no file, searching raises the engine's ``NotCalibratedError``.

        ``encoder`` must be the model that embedded both collections. ``kwargs`` go to the
        constructor (``similarity_top_k``, ``where``, ...).
        """
        from mmgap_core.store import ForeignLayout

        store = ForeignLayout.llamaindex(chroma_client, text_collection, image_collection)
        engine = RetrievalEngine(store, encoder)  # calibration lives in memory on the view
        if calibration_path is not None and os.path.exists(calibration_path):
            engine.import_calibration(calibration_path)
        elif calibrate:
            engine.calibrate(sample=calibration_sample, progress=False)
            if calibration_path is not None:
                engine.export_calibration(calibration_path)
        return cls(engine, **kwargs)

    @classmethod
    def from_multimodal_index(
        cls,
        index: Any,
        *,
        chroma_client: Any,
        encoder: Any = None,
        **kwargs: Any,
    ) -> MMGapLlamaRetriever:
        """Calibrated retrieval over a ``MultiModalVectorStoreIndex`` on two ``ChromaVectorStore`` s.

        ``chroma_client`` is the Chroma client holding the index's collections. The encoder is
        taken from the index's image embed model when that is an
        :class:`~mmgap_llamaindex.OpenClipMultiModalEmbedding`; otherwise pass ``encoder=``.
        Other ``kwargs`` are those of :meth:`from_chroma_collections` (``calibration_path``,
        ``calibrate``, ...) and of the constructor.
        """
        from mmgap_llamaindex.embedding import OpenClipMultiModalEmbedding

        names = {}
        for modality, store in (("text", index.vector_store), ("image", index.image_vector_store)):
            if store.class_name() != "ChromaVectorStore":
                raise ValueError(
                    f"the index's {modality} vector store is a {store.class_name()}; mmgap reads "
                    "ChromaVectorStore only"
                )
            names[modality] = store.client.name  # ChromaVectorStore.client is its collection
        image_model = index.image_embed_model
        text_model = getattr(index, "_embed_model", None)
        if encoder is None:
            if not isinstance(image_model, OpenClipMultiModalEmbedding):
                raise ValueError(
                    f"the index's image embed model is {type(image_model).__name__}, not "
                    "OpenClipMultiModalEmbedding: pass encoder= (the model that embedded both "
                    "collections)"
                )
            encoder = image_model.encoder
            if not isinstance(text_model, OpenClipMultiModalEmbedding):
                raise ValueError(
                    f"the index's text embed model is {type(text_model).__name__}, not the CLIP "
                    "model of its images: mmgap ranks texts and images in one embedding space, "
                    "so both must come from the same model (or pass encoder= explicitly)"
                )
        if isinstance(text_model, OpenClipMultiModalEmbedding) and (
            text_model.model_id != encoder.model_id
        ):
            raise ValueError(
                f"the index's texts were embedded with {text_model.model_id!r} but the encoder is "
                f"{encoder.model_id!r}: both modalities must use the same model"
            )
        return cls.from_chroma_collections(
            chroma_client, names["text"], names["image"], encoder, **kwargs
        )

    # ------------------------------------------------------------------ retrieval
    def _search(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if query_bundle.image_path is not None:
            text, image = None, query_bundle.image_path
        else:
            text, image = query_bundle.query_str, None
        result = self.engine.search(
            text,
            image,
            k=self.similarity_top_k,
            k_per_modality=self.k_per_modality,
            where=self.where,
            method=self.method,
        )
        threshold = self.score_threshold
        return [hit_to_node(h) for h in result if threshold is None or h.score >= threshold]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # The engine is synchronous (torch + Chroma): keep it off the event loop.
        return await asyncio.to_thread(self._search, query_bundle)

    def retrieve_image(self, image_path: str | os.PathLike) -> list[NodeWithScore]:
        """Nodes for an image query given as a file path (``QueryBundle(image_path=...)``)."""
        return self.retrieve(QueryBundle(query_str="", image_path=os.fspath(image_path)))

    async def aretrieve_image(self, image_path: str | os.PathLike) -> list[NodeWithScore]:
        """Async :meth:`retrieve_image`."""
        return await self.aretrieve(QueryBundle(query_str="", image_path=os.fspath(image_path)))
