"""LlamaIndex: the ``MultiModalRetriever`` methods, ``MetadataFilters``, configuration checks and a
modality added after calibration, through LlamaIndex's own entry points (``retrieve``,
``text_retrieve``, ``text_to_image_retrieve``, ``image_to_image_retrieve``, their async forms,
``RetrieverQueryEngine`` with ``MockLLM``) over a real ``MultiModalVectorStoreIndex`` on Chroma.
"""

from __future__ import annotations

import logging
import types
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("llama_index.vector_stores.chroma")
pytest.importorskip("open_clip")
chromadb = pytest.importorskip("chromadb")

from llama_index.core import StorageContext  # noqa: E402
from llama_index.core.base.base_multi_modal_retriever import MultiModalRetriever  # noqa: E402
from llama_index.core.indices import MultiModalVectorStoreIndex  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.schema import ImageNode, QueryBundle, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.vector_stores.chroma import ChromaVectorStore  # noqa: E402

from mmgap_core.engine import Hit, NotCalibratedError  # noqa: E402
from mmgap_llamaindex import (  # noqa: E402
    MMGapLlamaRetriever,
    hit_to_node,
    metadata_filters_to_where,
)
from mmgap_llamaindex.filters import combine_where  # noqa: E402

# text, topic, year, rating
TEXTS = [
    ("a cat sleeping on a warm windowsill", "animals", 2019, 4.5),
    ("a dog chasing a red ball in the park", "animals", 2021, 3.0),
    ("a cup of hot coffee with milk foam", "food", 2020, 4.0),
    ("fresh bread from the bakery", "food", 2022, 2.5),
    ("an astronaut floating outside the station", "space", 2018, 5.0),
    ("a rocket launching at dawn", "space", 2023, 3.5),
]
IMAGE_TOPIC = {"astronaut.png": "space", "coffee.jpg": "food", "chelsea.jpg": "animals"}
QUERY = "a cat sitting on a mat"


def _text_nodes() -> list[TextNode]:
    return [
        TextNode(id_=f"t{i}", text=t, metadata={"topic": topic, "year": year, "rating": rating})
        for i, (t, topic, year, rating) in enumerate(TEXTS)
    ]


def _image_nodes(images: list[Path]) -> list[ImageNode]:
    return [
        ImageNode(
            id_=f"i-{p.stem}",
            image_path=str(p),
            metadata={
                "topic": IMAGE_TOPIC.get(p.name, "colors"),
                "year": 2016 + i,
                "rating": 1.0 + 0.5 * i,
                "title": p.stem,
            },
        )
        for i, p in enumerate(images)
    ]


def _index(client, prefix: str, clip, nodes) -> MultiModalVectorStoreIndex:
    # embedding_function=None: Chroma's default embedding function would download a model.
    storage = StorageContext.from_defaults(
        vector_store=ChromaVectorStore(
            chroma_collection=client.get_or_create_collection(
                f"{prefix}-text", embedding_function=None
            )
        ),
        image_store=ChromaVectorStore(
            chroma_collection=client.get_or_create_collection(
                f"{prefix}-image", embedding_function=None
            )
        ),
    )
    return MultiModalVectorStoreIndex(
        nodes, storage_context=storage, embed_model=clip, image_embed_model=clip
    )


@pytest.fixture(scope="module")
def setup(li_embedding, sample_images, tmp_path_factory):
    """(client, index, {node id: metadata}) over 6 TextNodes and 8 ImageNodes."""
    client = chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("li-modes")))
    nodes = _text_nodes() + _image_nodes(sample_images)
    index = _index(client, "modes", li_embedding, nodes)
    yield client, index, {n.node_id: n.metadata for n in nodes}
    client.close()


@pytest.fixture(scope="module")
def retriever(setup) -> MMGapLlamaRetriever:
    client, index, _ = setup
    return MMGapLlamaRetriever.from_multimodal_index(index, chroma_client=client)


def _ids(results) -> list[str]:
    return [r.node.node_id for r in results]


# ---------------------------------------------------------------------------- retriever shape
def test_is_a_multimodal_retriever_built_from_public_api(
    setup, li_embedding, tmp_path, monkeypatch
):
    """Only the index's public attributes are read, and no file is written."""
    client, index, _ = setup
    public = types.SimpleNamespace(
        vector_store=index.vector_store,
        image_vector_store=index.image_vector_store,
        image_embed_model=index.image_embed_model,
    )
    monkeypatch.chdir(tmp_path)
    retriever = MMGapLlamaRetriever.from_multimodal_index(public, chroma_client=client)
    assert isinstance(retriever, MultiModalRetriever)
    assert list(tmp_path.iterdir()) == []
    assert len(retriever.retrieve(QUERY)) == 4


async def test_modality_methods_are_the_merged_ranking_limited(retriever, setup, sample_images):
    _, _, meta = setup
    n_items = len(meta)
    everything = MMGapLlamaRetriever(retriever.engine, similarity_top_k=n_items)
    merged = everything.retrieve(QUERY)
    texts = [
        r for r in merged if isinstance(r.node, TextNode) and not isinstance(r.node, ImageNode)
    ]
    images = [r for r in merged if isinstance(r.node, ImageNode)]
    assert len(texts) == len(TEXTS) and len(images) == len(sample_images)

    limited = MMGapLlamaRetriever(retriever.engine, similarity_top_k=3, image_similarity_top_k=2)
    got = limited.text_retrieve(QUERY)
    assert _ids(got) == _ids(texts[:3])
    assert [r.score for r in got] == pytest.approx([r.score for r in texts[:3]])
    got = limited.text_to_image_retrieve(QUERY)
    assert _ids(got) == _ids(images[:2])
    assert [r.score for r in got] == pytest.approx([r.score for r in images[:2]])
    assert _ids(limited.text_retrieve(QueryBundle(QUERY))) == _ids(texts[:3])
    assert _ids(await limited.atext_retrieve(QUERY)) == _ids(texts[:3])
    assert _ids(await limited.atext_to_image_retrieve(QueryBundle(QUERY))) == _ids(images[:2])

    path = next(p for p in sample_images if p.name == "chelsea.jpg")
    merged_image_query = everything.retrieve_image(path)
    image_hits = [r for r in merged_image_query if isinstance(r.node, ImageNode)]
    got = limited.image_to_image_retrieve(str(path))
    assert _ids(got) == _ids(image_hits[:2]) and got[0].node.node_id == "i-chelsea"
    assert [r.score for r in got] == pytest.approx([r.score for r in image_hits[:2]])
    bundle = QueryBundle(query_str="what is this?", image_path=str(path))
    assert _ids(limited.image_to_image_retrieve(bundle)) == _ids(got)
    assert _ids(await limited.aimage_to_image_retrieve(str(path))) == _ids(got)
    assert _ids(await everything.aretrieve(bundle)) == _ids(merged_image_query)


def test_image_to_image_needs_an_image(retriever, tmp_path):
    with pytest.raises(ValueError, match="empty query.*image path"):
        retriever.image_to_image_retrieve(QueryBundle(query_str="a cat"))
    with pytest.raises(ValueError, match="query image not found.*nope.png"):
        retriever.image_to_image_retrieve(str(tmp_path / "nope.png"))
    with pytest.raises(ValueError, match="empty query"):
        retriever.text_retrieve("  ")


# ---------------------------------------------------------------------------- filters
def _f(key, value, op="=="):
    return MetadataFilter(key=key, value=value, operator=FilterOperator(op))


def test_metadata_filters_to_where():
    assert metadata_filters_to_where(MetadataFilters(filters=[_f("topic", "food")])) == {
        "topic": {"$eq": "food"}
    }
    ops = {"!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}
    for op, chroma_op in ops.items():
        where = metadata_filters_to_where(MetadataFilters(filters=[_f("year", 2020, op)]))
        assert where == {"year": {chroma_op: 2020}}
    nested = MetadataFilters(
        filters=[
            _f("topic", ["food", "space"], "in"),
            MetadataFilters(
                filters=[_f("year", 2020, ">="), _f("rating", 4.0, "<")],
                condition=FilterCondition.OR,
            ),
        ]
    )
    assert metadata_filters_to_where(nested) == {
        "$and": [
            {"topic": {"$in": ["food", "space"]}},
            {"$or": [{"year": {"$gte": 2020}}, {"rating": {"$lt": 4.0}}]},
        ]
    }
    assert metadata_filters_to_where(MetadataFilters(filters=[_f("tags", ["a", "b"], "any")])) == {
        "$or": [{"tags": {"$contains": "a"}}, {"tags": {"$contains": "b"}}]
    }
    assert metadata_filters_to_where(MetadataFilters(filters=[_f("tags", ["a"], "all")])) == {
        "tags": {"$contains": "a"}
    }
    assert metadata_filters_to_where(MetadataFilters(filters=[])) is None
    assert combine_where({"topic": "food"}, MetadataFilters(filters=[_f("year", 2020)])) == {
        "$and": [{"topic": "food"}, {"year": {"$eq": 2020}}]
    }
    assert combine_where(None, None) is None

    for bad, message in [
        (MetadataFilters(filters=[_f("topic", "fo", "text_match")]), "no metadata operator"),
        (MetadataFilters(filters=[_f("topic", None, "is_empty")]), "no metadata operator"),
        (MetadataFilters(filters=[_f("topic", "food")], condition="not"), "no 'not' condition"),
        (MetadataFilters(filters=[_f("topic", "food", "in")]), "needs a list"),
        (MetadataFilters(filters=[_f("topic", None)]), "None"),
    ]:
        with pytest.raises(ValueError, match=message):
            metadata_filters_to_where(bad)
    with pytest.raises(ValueError, match="use where="):
        metadata_filters_to_where({"topic": "food"})


FILTER_CASES = {
    "eq": (MetadataFilters(filters=[_f("topic", "food")]), lambda m: m["topic"] == "food"),
    "ne": (MetadataFilters(filters=[_f("topic", "food", "!=")]), lambda m: m["topic"] != "food"),
    "gt": (MetadataFilters(filters=[_f("year", 2020, ">")]), lambda m: m["year"] > 2020),
    "gte": (MetadataFilters(filters=[_f("year", 2020, ">=")]), lambda m: m["year"] >= 2020),
    "lt": (MetadataFilters(filters=[_f("rating", 3.0, "<")]), lambda m: m["rating"] < 3.0),
    "lte": (MetadataFilters(filters=[_f("rating", 3.0, "<=")]), lambda m: m["rating"] <= 3.0),
    "in": (
        MetadataFilters(filters=[_f("topic", ["food", "space"], "in")]),
        lambda m: m["topic"] in ("food", "space"),
    ),
    "nin": (
        MetadataFilters(filters=[_f("topic", ["food", "space"], "nin")]),
        lambda m: m["topic"] not in ("food", "space"),
    ),
    "and": (
        MetadataFilters(filters=[_f("topic", "animals"), _f("year", 2020, ">")]),
        lambda m: m["topic"] == "animals" and m["year"] > 2020,
    ),
    "or-nested": (
        MetadataFilters(
            filters=[
                _f("topic", "space"),
                MetadataFilters(filters=[_f("topic", "food"), _f("rating", 4.0, ">=")]),
            ],
            condition=FilterCondition.OR,
        ),
        lambda m: m["topic"] == "space" or (m["topic"] == "food" and m["rating"] >= 4.0),
    ),
}


@pytest.mark.parametrize("case", sorted(FILTER_CASES))
def test_filters_select_what_they_say(retriever, setup, case):
    _, _, meta = setup
    filters, keep = FILTER_CASES[case]
    expected = {node_id for node_id, m in meta.items() if keep(m)}
    assert expected and len(expected) < len(meta)  # every case keeps some and drops some
    filtered = MMGapLlamaRetriever(retriever.engine, similarity_top_k=len(meta), filters=filters)
    results = filtered.retrieve(QUERY)
    assert set(_ids(results)) == expected
    # The same ranking as the engine's with the translated where: a filter, not a re-ranking.
    hits = retriever.engine.search(
        text=QUERY, k=len(meta), where=metadata_filters_to_where(filters)
    )
    assert _ids(results) == [h.id for h in hits]
    images = filtered.text_to_image_retrieve(QUERY)
    assert {r.node.node_id for r in images} <= expected
    assert all(isinstance(r.node, ImageNode) for r in images)


def test_filters_and_where_combine(retriever, setup):
    _, _, meta = setup
    both = MMGapLlamaRetriever(
        retriever.engine,
        similarity_top_k=len(meta),
        where={"topic": "food"},
        filters=MetadataFilters(filters=[_f("year", 2021, "<=")]),
    )
    expected = {i for i, m in meta.items() if m["topic"] == "food" and m["year"] <= 2021}
    assert set(_ids(both.retrieve(QUERY))) == expected


def test_bad_configuration_fails_at_construction(retriever, setup):
    client, index, _ = setup
    engine = retriever.engine
    with pytest.raises(ValueError, match=r"'bogus'.*raw, standardize.*background-z"):
        MMGapLlamaRetriever(engine, method="bogus")
    with pytest.raises(ValueError, match="mmgap eval"):
        MMGapLlamaRetriever(engine, method="standardize-gold")
    with pytest.raises(ValueError, match="no metadata operator"):
        MMGapLlamaRetriever(engine, filters=MetadataFilters(filters=[_f("t", "x", "text_match")]))
    with pytest.raises(ValueError, match="use where="):
        MMGapLlamaRetriever(engine, filters={"topic": "food"})
    with pytest.raises(ValueError, match="image_similarity_top_k"):
        MMGapLlamaRetriever(engine, image_similarity_top_k=0)
    with pytest.raises(TypeError):
        MMGapLlamaRetriever(engine, top_k=2)
    with pytest.raises(ValueError, match="'bogus'"):
        MMGapLlamaRetriever.from_multimodal_index(index, chroma_client=client, method="bogus")


def test_query_engine_with_filters_and_mock_llm(retriever):
    food = MMGapLlamaRetriever(
        retriever.engine,
        similarity_top_k=10,
        filters=MetadataFilters(filters=[_f("topic", "food")]),
    )
    query_engine = RetrieverQueryEngine.from_args(food, llm=MockLLM())
    response = query_engine.query("something to drink")
    assert response.source_nodes and {s.node.metadata["topic"] for s in response.source_nodes} == {
        "food"
    }
    prompt = str(response)  # MockLLM echoes the prompt
    assert "a cup of hot coffee with milk foam" in prompt and "title: coffee" in prompt


# ---------------------------------------------------------------------------- multimodal hits
def test_multimodal_hit_is_an_image_node_with_text(sample_images):
    image = next(p for p in sample_images if p.name == "coffee.jpg")
    hit = Hit(
        id="doc-1",
        modality="multimodal",
        score=1.5,
        raw_score=0.31,
        rank=1,
        text="Espresso cup, 90 ml, white porcelain.",
        uri=str(image),
        metadata={"mime_type": "image/jpeg", "sku": "E-90"},
    )
    result = hit_to_node(hit)
    node = result.node
    assert isinstance(node, ImageNode) and node.node_id == "doc-1" and result.score == 1.5
    assert node.text == "Espresso cup, 90 ml, white porcelain."
    assert node.image_path == str(image) and node.image_mimetype == "image/jpeg"
    assert node.metadata["modality"] == "multimodal" and node.metadata["sku"] == "E-90"
    assert "Espresso cup" in node.get_content()
    # LangChain's add_images layout keeps the image itself as base64 text: ImageNode.image.
    stored = Hit("i", "image", 1.0, 0.3, 2, text="iVBORw0KGgo" + "A" * 100)
    node = hit_to_node(stored).node
    assert node.image == stored.text and node.text == ""


# ---------------------------------------------------------------------------- issue 11 item 9
def test_images_added_after_calibration(li_embedding, sample_images, tmp_path, caplog):
    """Index texts, calibrate, add images, search: a NotCalibratedError naming the fix, or a
    recalibration with auto_recalibrate=True, kept for the next process."""
    path = str(tmp_path / "db")
    client = chromadb.PersistentClient(path=path)
    index = _index(client, "late", li_embedding, _text_nodes())
    with caplog.at_level(logging.WARNING):
        texts_only = MMGapLlamaRetriever.from_multimodal_index(index, chroma_client=client)
    assert "holds text items only" in caplog.text
    assert texts_only.text_to_image_retrieve(QUERY) == []
    assert {r.node.metadata["modality"] for r in texts_only.retrieve(QUERY)} == {"text"}

    index.insert_nodes(_image_nodes(sample_images[:4]))
    fresh = chromadb.PersistentClient(path=path)  # a new process
    later = MMGapLlamaRetriever.from_multimodal_index(index, chroma_client=fresh)
    with pytest.warns(UserWarning, match="grew"), pytest.raises(NotCalibratedError) as err:
        later.retrieve(QUERY)
    assert "engine.calibrate()" in str(err.value) and "auto_recalibrate=True" in str(err.value)

    auto = MMGapLlamaRetriever.from_multimodal_index(
        index, chroma_client=fresh, auto_recalibrate=True, similarity_top_k=10
    )
    results = auto.retrieve(QUERY)
    assert {r.node.metadata["modality"] for r in results} == {"image", "text"}
    assert len(auto.text_to_image_retrieve(QUERY)) == 4
    again = MMGapLlamaRetriever.from_multimodal_index(
        index, chroma_client=chromadb.PersistentClient(path=path), similarity_top_k=10
    )
    assert again.engine.calibration.corpus_sizes == {"image": 4, "text": len(TEXTS)}
    assert _ids(again.retrieve(QUERY)) == _ids(results)
    client.close()
