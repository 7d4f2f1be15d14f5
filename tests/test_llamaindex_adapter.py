"""LlamaIndex adapter: open_clip embedding, calibrated retrieval over a real
MultiModalVectorStoreIndex on two Chroma collections, RetrieverQueryEngine with MockLLM, and bad
input.

Everything runs on the tiny random-weight open_clip model (no downloads, no LLM). The adapter must
mirror ``engine.search`` exactly, so most checks compare its nodes with the engine's hits.
"""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("llama_index.vector_stores.chroma")
pytest.importorskip("open_clip")
chromadb = pytest.importorskip("chromadb")

from llama_index.core import StorageContext  # noqa: E402
from llama_index.core.indices import MultiModalVectorStoreIndex  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.schema import ImageNode, MetadataMode, QueryBundle, TextNode  # noqa: E402
from llama_index.vector_stores.chroma import ChromaVectorStore  # noqa: E402

from mmgap_core.engine import NotCalibratedError, RetrievalEngine  # noqa: E402
from mmgap_core.store.chroma import ChromaStore  # noqa: E402
from mmgap_llamaindex import (  # noqa: E402
    RAW_SCORE_KEY,
    MMGapLlamaRetriever,
    OpenClipMultiModalEmbedding,
)

TEXTS = {
    "a cat sleeping on a warm windowsill": "animals",
    "a dog chasing a red ball in the park": "animals",
    "two horses grazing in a green field": "animals",
    "a cup of hot coffee with milk foam": "food",
    "fresh bread from the bakery": "food",
    "a bowl of ripe strawberries": "food",
    "an astronaut floating outside the station": "space",
    "a rocket launching at dawn": "space",
    "the moon seen through a telescope": "space",
}
IMAGE_TOPIC = {"astronaut.png": "space", "coffee.jpg": "food", "chelsea.jpg": "animals"}
QUERY = "a cat sitting on a mat"


def _nodes(images: list[Path]) -> list[TextNode]:
    nodes: list[TextNode] = [
        TextNode(id_=f"text-{i}", text=t, metadata={"topic": topic})
        for i, (t, topic) in enumerate(TEXTS.items())
    ]
    nodes += [
        ImageNode(
            id_=f"image-{p.stem}",
            image_path=str(p),
            metadata={"topic": IMAGE_TOPIC.get(p.name, "colors"), "title": p.stem},
        )
        for p in images
    ]
    return nodes


def _build_index(
    client, prefix: str, embedding, images, text_embedding=None
) -> MultiModalVectorStoreIndex:
    # Chroma's default embedding function downloads a model: never let it be created.
    text = client.get_or_create_collection(f"{prefix}-text", embedding_function=None)  # l2 space
    image = client.get_or_create_collection(
        f"{prefix}-image", embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
    )
    storage = StorageContext.from_defaults(
        vector_store=ChromaVectorStore(chroma_collection=text),
        image_store=ChromaVectorStore(chroma_collection=image),
    )
    return MultiModalVectorStoreIndex(
        _nodes(images),
        storage_context=storage,
        embed_model=text_embedding or embedding,
        image_embed_model=embedding,
    )


@pytest.fixture(scope="module")
def li_setup(li_embedding, sample_images, tmp_path_factory):
    """(chroma client, index) with 9 TextNodes and 8 ImageNodes in two persistent collections."""
    client = chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("li-chroma")))
    index = _build_index(client, "li", li_embedding, sample_images)
    yield client, index
    client.close()


@pytest.fixture(scope="module")
def li_retriever(li_setup) -> MMGapLlamaRetriever:
    client, index = li_setup
    return MMGapLlamaRetriever.from_multimodal_index(index, chroma_client=client)


# ---------------------------------------------------------------------------- embedding
async def test_embedding_matches_the_encoder(tiny_encoder, li_embedding, sample_images):
    wrapped = OpenClipMultiModalEmbedding(encoder=tiny_encoder)
    assert wrapped.encoder is tiny_encoder and wrapped.model_id == li_embedding.model_id
    assert wrapped.model_name == tiny_encoder.model_name and wrapped.dim == tiny_encoder.dim
    assert wrapped.to_dict()["class_name"] == "OpenClipMultiModalEmbedding"
    texts = ["a red square", "the sea"]
    expected_text = tiny_encoder.embed_texts(texts).vectors
    expected_image = tiny_encoder.embed_images(sample_images[:3]).vectors

    for emb in (wrapped, li_embedding):
        assert np.allclose(emb.get_text_embedding_batch(texts), expected_text, atol=1e-5)
        assert np.allclose(emb.get_query_embedding("a red square"), expected_text[0], atol=1e-5)
        assert np.allclose(await emb.aget_query_embedding("the sea"), expected_text[1], atol=1e-5)
        assert np.allclose(await emb.aget_text_embedding_batch(texts), expected_text, atol=1e-5)
        images = [str(p) for p in sample_images[:3]]
        assert np.allclose(emb.get_image_embedding_batch(images), expected_image, atol=1e-5)
        assert np.allclose(await emb.aget_image_embedding_batch(images), expected_image, atol=1e-5)
        as_bytes = BytesIO(sample_images[0].read_bytes())
        assert np.allclose(emb.get_image_embedding(as_bytes), expected_image[0], atol=1e-5)
        assert np.allclose(await emb.aget_image_embedding(images[1]), expected_image[1], atol=1e-5)


def test_embedding_bad_input(tiny_encoder, tmp_path):
    emb = OpenClipMultiModalEmbedding(encoder=tiny_encoder)
    with pytest.raises(ValueError, match="empty"):
        emb.get_query_embedding("  ")
    with pytest.raises(ValueError, match="could not be embedded"):
        emb.get_text_embedding_batch(["fine", ""])
    with pytest.raises(ValueError, match="not found|No such file"):
        emb.get_image_embedding(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="model options"):
        OpenClipMultiModalEmbedding(encoder=tiny_encoder, device="cpu")
    with pytest.raises(ValueError, match="has no embed_texts"):
        OpenClipMultiModalEmbedding(encoder=object())


# ---------------------------------------------------------------------------- index retrieval
def test_retrieves_nodes_of_the_multimodal_index(li_retriever, sample_images):
    n_items = len(TEXTS) + len(sample_images)
    results = MMGapLlamaRetriever(li_retriever.engine, similarity_top_k=n_items).retrieve(QUERY)
    hits = li_retriever.engine.search(text=QUERY, k=n_items)
    assert [r.node.node_id for r in results] == [h.id for h in hits]
    assert [r.score for r in results] == pytest.approx([h.score for h in hits])
    by_id = {r.node.node_id: r.node for r in results}
    assert set(by_id) == {f"text-{i}" for i in range(len(TEXTS))} | {
        f"image-{p.stem}" for p in sample_images
    }
    for i, text in enumerate(TEXTS):
        node = by_id[f"text-{i}"]
        assert type(node) is TextNode and node.text == text
        assert node.metadata["topic"] == TEXTS[text] and node.metadata["modality"] == "text"
    for p in sample_images:
        node = by_id[f"image-{p.stem}"]
        assert isinstance(node, ImageNode) and node.image_path == str(p)
        assert node.image_mimetype == ("image/png" if p.suffix == ".png" else "image/jpeg")
        assert node.metadata["title"] == p.stem and node.metadata["modality"] == "image"
    for r, h in zip(results, hits):
        assert r.node.metadata[RAW_SCORE_KEY] == pytest.approx(h.raw_score)
        assert RAW_SCORE_KEY in r.node.excluded_llm_metadata_keys
        assert RAW_SCORE_KEY not in r.node.get_content(metadata_mode=MetadataMode.LLM)
        assert "modality:" in r.node.get_content(metadata_mode=MetadataMode.LLM)


async def test_image_query_through_query_bundle(li_retriever, sample_images):
    path = next(p for p in sample_images if p.name == "chelsea.jpg")
    results = li_retriever.retrieve(QueryBundle(query_str="what is this?", image_path=str(path)))
    assert [r.node.node_id for r in results] == [
        h.id for h in li_retriever.engine.search(image=path, k=4)
    ]
    # The image itself is the best image match (cosine 1); where it ranks among the texts is
    # the default method's call.
    top = [r for r in results if isinstance(r.node, ImageNode)][0]
    assert top.node.node_id == "image-chelsea"
    assert top.node.metadata[RAW_SCORE_KEY] == pytest.approx(1.0, abs=1e-4)
    ids = [r.node.node_id for r in results]
    assert [r.node.node_id for r in li_retriever.retrieve_image(path)] == ids
    assert [r.node.node_id for r in await li_retriever.aretrieve_image(path)] == ids
    text_ids = [r.node.node_id for r in li_retriever.retrieve(QUERY)]
    assert [r.node.node_id for r in await li_retriever.aretrieve(QUERY)] == text_ids


def test_options_filter_threshold_method(li_retriever):
    engine = li_retriever.engine
    food = MMGapLlamaRetriever(engine, similarity_top_k=20, where={"topic": "food"})
    results = food.retrieve(QUERY)
    assert {r.node.metadata["topic"] for r in results} == {"food"} and len(results) == 3 + 1
    hits = engine.search(text=QUERY, k=8)
    cut = hits[3].score
    kept = MMGapLlamaRetriever(engine, similarity_top_k=8, score_threshold=cut).retrieve(QUERY)
    assert [r.node.node_id for r in kept] == [h.id for h in hits if h.score >= cut]
    raw = MMGapLlamaRetriever(engine, similarity_top_k=5, method="raw").retrieve(QUERY)
    assert [r.score for r in raw] == pytest.approx(
        [h.raw_score for h in engine.search(text=QUERY, k=5, method="raw")]
    )
    two_view = MMGapLlamaRetriever(engine, similarity_top_k=5, method="two-view-z")
    hits = engine.search(text=QUERY, k=5, method="two-view-z")
    got = two_view.retrieve(QUERY)
    assert [r.node.node_id for r in got] == [h.id for h in hits]
    assert [r.score for r in got] == pytest.approx([h.score for h in hits])


def test_calibration_persists_next_to_the_collections(li_setup, li_retriever, tmp_path):
    """The calibration lives in Chroma next to LlamaIndex's collections: a new retriever (as in a
    new process) finds it without refitting, and no file is written."""
    client, index = li_setup
    names = {c.name for c in client.list_collections()}
    assert "li-text-calibration-mmgap" in names
    assert li_retriever.engine.store.calibration_collection == "li-text-calibration-mmgap"
    fresh_client = chromadb.PersistentClient(path=client.get_settings().persist_directory)
    again = MMGapLlamaRetriever.from_multimodal_index(
        index, chroma_client=fresh_client, calibrate=False
    )
    assert again.engine.calibration == li_retriever.engine.calibration
    assert [r.score for r in again.retrieve(QUERY)] == pytest.approx(
        [r.score for r in li_retriever.retrieve(QUERY)]
    )
    assert list(tmp_path.iterdir()) == []


def test_calibration_file_import_and_other_model(li_setup, li_retriever, tiny_clip, tmp_path):
    from _fixtures_clip import make_tiny_checkpoint

    from mmgap_core.calibration.schema import CalibrationFormatError

    client, index = li_setup
    path = li_retriever.engine.export_calibration(tmp_path / "calibration.json")
    data = json.loads(path.read_text())
    assert data["model_id"] == li_retriever.engine.model_id
    assert data["corpus_sizes"] == {"text": len(TEXTS), "image": 8}
    imported = MMGapLlamaRetriever.from_chroma_collections(
        client,
        "li-text",
        "li-image",
        li_retriever.engine.encoder,
        calibration_path=path,
        persist_calibration=False,
    )
    assert imported.engine.calibration == li_retriever.engine.calibration
    with pytest.raises(CalibrationFormatError, match="missing.json"):  # never created
        MMGapLlamaRetriever.from_chroma_collections(
            client,
            "li-text",
            "li-image",
            li_retriever.engine.encoder,
            calibration_path=tmp_path / "missing.json",
            persist_calibration=False,
        )
    assert not (tmp_path / "missing.json").exists()

    other = OpenClipMultiModalEmbedding(
        tiny_clip.model_name,
        pretrained=str(make_tiny_checkpoint(tiny_clip.config_path, tmp_path / "o.pt", seed=1)),
        model_config=str(tiny_clip.config_path),
        device="cpu",
    )
    with pytest.raises(ValueError, match="statistics were fitted for model"):
        MMGapLlamaRetriever.from_chroma_collections(
            client, "li-text", "li-image", other, calibration_path=path, persist_calibration=False
        )
    # The calibration stored next to the collections is refused for another model too.
    with pytest.raises(ValueError, match="statistics were fitted for model"):
        MMGapLlamaRetriever.from_chroma_collections(client, "li-text", "li-image", other)
    # Through the index the mismatch is caught earlier: its images were embedded by another model.
    with pytest.raises(ValueError, match="both modalities must use the same model"):
        MMGapLlamaRetriever.from_multimodal_index(
            index, chroma_client=client, encoder=other.encoder
        )


def test_uncalibrated_says_what_to_run(li_setup):
    client, index = li_setup
    retriever = MMGapLlamaRetriever.from_multimodal_index(
        index, chroma_client=client, calibrate=False, persist_calibration=False
    )
    with pytest.raises(NotCalibratedError, match=r"engine\.calibrate\(\)"):
        retriever.retrieve(QUERY)


# ---------------------------------------------------------------------------- query engine
async def test_retriever_query_engine_with_mock_llm(li_retriever):
    # MockLLM echoes the prompt it is given, so the response shows exactly what the LLM saw.
    engine = RetrieverQueryEngine.from_args(li_retriever, llm=MockLLM())
    response = engine.query(QUERY)
    sources = response.source_nodes
    assert [s.node.node_id for s in sources] == [
        r.node.node_id for r in li_retriever.retrieve(QUERY)
    ]
    prompt = str(response)
    assert f"Query: {QUERY}" in prompt
    assert "modality: image" in prompt or "modality: text" in prompt
    for s in sources:
        if isinstance(s.node, ImageNode):
            assert f"title: {s.node.metadata['title']}" in prompt
        else:
            assert s.node.text in prompt
    assert RAW_SCORE_KEY not in prompt
    assert not any(repr(s.node.metadata[RAW_SCORE_KEY]) in prompt for s in sources)
    aresponse = await engine.aquery(QUERY)
    assert [s.node.node_id for s in aresponse.source_nodes] == [s.node.node_id for s in sources]


# ---------------------------------------------------------------------------- mmgap's own store
def test_over_mmgap_chroma_store(tiny_encoder, sample_images, tmp_path):
    engine = RetrievalEngine(ChromaStore.persistent(tmp_path / "chroma", "own"), tiny_encoder)
    engine.index(
        texts=list(TEXTS),
        images=sample_images,
        image_metadatas=[{"title": p.stem} for p in sample_images],
        progress=False,
    )
    retriever = MMGapLlamaRetriever(engine, similarity_top_k=len(TEXTS) + len(sample_images))
    with pytest.raises(NotCalibratedError, match="mmgap calibrate"):
        retriever.retrieve(QUERY)
    engine.calibrate(progress=False)
    results = retriever.retrieve(QUERY)
    hits = engine.search(text=QUERY, k=len(TEXTS) + len(sample_images))
    assert [r.node.node_id for r in results] == [h.id for h in hits]
    for r, h in zip(results, hits):
        assert r.score == pytest.approx(h.score)
        if h.modality == "text":
            assert type(r.node) is TextNode and r.node.text == h.text
        else:
            assert isinstance(r.node, ImageNode) and r.node.image_path == h.uri
            assert r.node.image_mimetype in ("image/png", "image/jpeg")
            assert r.node.metadata["title"] == Path(h.uri).stem


# ---------------------------------------------------------------------------- bad input
def test_bad_queries(li_retriever, tmp_path):
    for query in ("", "   "):
        with pytest.raises(ValueError, match="empty query"):
            li_retriever.retrieve(query)
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError, match="query image not found.*missing.png"):
        li_retriever.retrieve(QueryBundle(query_str="", image_path=str(missing)))
    with pytest.raises(ValueError, match="query image not found"):
        li_retriever.retrieve_image(missing)


async def test_bad_query_async(li_retriever):
    with pytest.raises(ValueError, match="empty query"):
        await li_retriever.aretrieve("")


def test_bad_construction(li_retriever, li_embedding, tiny_encoder):
    with pytest.raises(ValueError, match="similarity_top_k must be a positive integer"):
        MMGapLlamaRetriever(li_retriever.engine, similarity_top_k=0)
    with pytest.raises(ValueError, match="k_per_modality"):
        MMGapLlamaRetriever(li_retriever.engine, k_per_modality=-1)
    with pytest.raises(ValueError, match="RetrievalEngine"):
        MMGapLlamaRetriever(object())
    in_memory = MultiModalVectorStoreIndex(
        [], embed_model=li_embedding, image_embed_model=li_embedding
    )
    with pytest.raises(ValueError, match="ChromaVectorStore only"):
        MMGapLlamaRetriever.from_multimodal_index(in_memory, chroma_client=None)


def test_index_models_must_be_one_clip_model(li_setup, li_embedding, sample_images):
    from llama_index.core.embeddings import MockEmbedding, MockMultiModalEmbedding

    client, index = li_setup
    storage = StorageContext.from_defaults(
        vector_store=index.vector_store, image_store=index.image_vector_store
    )
    mock_images = MultiModalVectorStoreIndex(
        [],
        storage_context=storage,
        embed_model=li_embedding,
        image_embed_model=MockMultiModalEmbedding(embed_dim=32),
    )
    with pytest.raises(ValueError, match="pass encoder="):
        MMGapLlamaRetriever.from_multimodal_index(mock_images, chroma_client=client)
    # Texts embedded by another model (here a mock of the same width), images by CLIP: the
    # texts' model is not exposed by the index, so it is checked by what it stored.
    mock_texts = _build_index(client, "mock", li_embedding, sample_images[:2], MockEmbedding(32))
    with pytest.raises(ValueError, match="same model"):
        MMGapLlamaRetriever.from_multimodal_index(mock_texts, chroma_client=client)


# ---------------------------------------------------------------------------- backends
def test_persistent_and_http_clients(chroma_client, chroma_store_name, li_embedding, sample_images):
    index = _build_index(chroma_client, chroma_store_name, li_embedding, sample_images[:4])
    retriever = MMGapLlamaRetriever.from_multimodal_index(
        index, chroma_client=chroma_client, similarity_top_k=6
    )
    results = retriever.retrieve(QUERY)
    assert [r.node.node_id for r in results] == [
        h.id for h in retriever.engine.search(text=QUERY, k=6)
    ]
    assert {type(r.node) for r in results} <= {TextNode, ImageNode} and len(results) == 6
