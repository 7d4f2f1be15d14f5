"""LangChain adapter: the standard retriever suite, LCEL, EnsembleRetriever, image queries, errors.

Everything runs on the tiny random-weight open_clip model over a small calibrated persistent Chroma
store in tmp (no downloads). The adapter must mirror ``engine.search`` exactly, so most checks
compare its Documents with the engine's hits for the same query.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("open_clip")
pytest.importorskip("chromadb")

from langchain_core.callbacks import (  # noqa: E402
    BaseCallbackHandler,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.prompts import PromptTemplate  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.runnables import RunnableLambda, RunnablePassthrough  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402

from pydantic import ValidationError  # noqa: E402

from mmgap_core.engine import NotCalibratedError, RetrievalEngine  # noqa: E402
from mmgap_core.fusion import DEFAULT_METHOD, METHODS  # noqa: E402
from mmgap_core.store.chroma import ChromaStore  # noqa: E402
from mmgap_langchain import MMGapRetriever  # noqa: E402

TEXTS = {
    "a cat sleeping on a warm windowsill": "animals",
    "a dog chasing a red ball in the park": "animals",
    "two horses grazing in a green field": "animals",
    "a parrot with bright feathers": "animals",
    "a cup of hot coffee with milk foam": "food",
    "fresh bread from the bakery": "food",
    "a bowl of ripe strawberries": "food",
    "pasta with tomato sauce": "food",
    "an astronaut floating outside the station": "space",
    "a rocket launching at dawn": "space",
    "the moon seen through a telescope": "space",
    "a photograph of a camera lens": "space",
}
# Image metadata by file name (the sample_images fixture); camera.png and the plain colour images
# have no caption-like key, so their page_content is their URI.
IMAGE_META = {
    "astronaut.png": {"topic": "space", "title": "an astronaut in a white suit"},
    "coffee.jpg": {"topic": "food", "title": "a cup of coffee"},
    "chelsea.jpg": {"topic": "animals", "caption": "a tabby cat"},
    "camera.png": {"topic": "space"},
}
QUERY = "a cat sitting on a mat"


def _encoder(tiny_clip, checkpoint=None):
    from mmgap_core.encoders.open_clip import OpenClipEncoder

    return OpenClipEncoder(
        tiny_clip.model_name,
        pretrained=str(checkpoint or tiny_clip.checkpoint_path),
        model_config=str(tiny_clip.config_path),
        device="cpu",
        batch_size=8,
    )


def _index_corpus(engine: RetrievalEngine, images: list[Path]) -> None:
    report = engine.index(
        texts=list(TEXTS),
        images=images,
        text_metadatas=[{"topic": t} for t in TEXTS.values()],
        image_metadatas=[IMAGE_META.get(p.name, {"topic": "colors"}) for p in images],
        progress=False,
    )
    assert report.added == {"text": len(TEXTS), "image": len(images)}, report.summary()


@pytest.fixture(scope="module")
def lc_engine(tiny_clip, sample_images, tmp_path_factory) -> RetrievalEngine:
    """A calibrated engine over 12 texts and 8 images in a persistent Chroma store (built once)."""
    store = ChromaStore.persistent(tmp_path_factory.mktemp("lc-chroma"), "lc")
    engine = RetrievalEngine(store, _encoder(tiny_clip))
    _index_corpus(engine, sample_images)
    engine.calibrate(progress=False)
    return engine


@pytest.fixture
def retriever(lc_engine) -> MMGapRetriever:
    return MMGapRetriever(engine=lc_engine)


def _image_id(engine: RetrievalEngine, path: Path) -> str:
    (hit,) = [
        h for h in engine.search(image=path, k=30, method="raw") if h.uri == str(path.resolve())
    ]
    return hit.id


# ---------------------------------------------------------------------------- standard suite
class TestMMGapRetrieverStandard(RetrieversIntegrationTests):
    """langchain-tests' standard retriever suite (k handling, Document types, ainvoke)."""

    @pytest.fixture(autouse=True)
    def _use_engine(self, lc_engine) -> None:
        self._engine = lc_engine

    @property
    def retriever_constructor(self) -> type[MMGapRetriever]:
        return MMGapRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"engine": self._engine}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


# ---------------------------------------------------------------------------- documents
def test_documents_mirror_engine_hits(retriever, lc_engine):
    docs = retriever.invoke(QUERY, k=10)
    hits = lc_engine.search(text=QUERY, k=10)
    assert [d.id for d in docs] == [h.id for h in hits]
    for doc, hit in zip(docs, hits):
        assert doc.metadata["modality"] == hit.modality
        assert doc.metadata["relevance_score"] == pytest.approx(hit.score)
        assert doc.metadata["raw_score"] == pytest.approx(hit.raw_score)
        assert doc.metadata["rank"] == hit.rank
        assert doc.metadata["uri"] == hit.uri
        assert doc.metadata["topic"] == hit.metadata["topic"]  # stored metadata kept
        if hit.modality == "text":
            assert doc.page_content == hit.text
            assert doc.metadata["mime_type"] == "text/plain"
    scores = [d.metadata["relevance_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


def test_image_documents_use_caption_then_uri(retriever, lc_engine, sample_images):
    n_items = len(TEXTS) + len(sample_images)
    docs = retriever.invoke(QUERY, k=n_items)
    images = {Path(d.metadata["uri"]).name: d for d in docs if d.metadata["modality"] == "image"}
    assert set(images) == {p.name for p in sample_images}
    assert images["astronaut.png"].page_content == "an astronaut in a white suit"
    assert images["chelsea.jpg"].page_content == "a tabby cat"
    assert images["camera.png"].page_content == images["camera.png"].metadata["uri"]
    assert images["camera.png"].metadata["mime_type"] == "image/png"
    assert images["coffee.jpg"].metadata["mime_type"] == "image/jpeg"


def test_calibration_changes_the_merged_ranking(lc_engine):
    """Raw cosine ranks texts above every image for a text query (the modality gap); the
    calibrated ranking lets images in. Each retriever mirrors its engine method exactly."""
    raw = MMGapRetriever(engine=lc_engine, method="raw", k=8).invoke(QUERY)
    cal = MMGapRetriever(engine=lc_engine, k=8).invoke(QUERY)
    assert [d.id for d in raw] == [h.id for h in lc_engine.search(text=QUERY, k=8, method="raw")]
    assert {d.metadata["modality"] for d in raw} == {"text"}
    assert [d.id for d in cal] == [h.id for h in lc_engine.search(text=QUERY, k=8)]
    assert "image" in {d.metadata["modality"] for d in cal}


def test_filter_and_per_call_override(lc_engine):
    food = MMGapRetriever(engine=lc_engine, k=20, filter={"topic": "food"})
    docs = food.invoke(QUERY)
    assert {d.metadata["topic"] for d in docs} == {"food"}
    assert len(docs) == 4 + 1  # four food texts and the coffee image
    space = food.invoke(QUERY, filter={"topic": "space"}, k=2)
    assert len(space) == 2 and {d.metadata["topic"] for d in space} == {"space"}


def test_score_threshold_in_calibrated_units(lc_engine):
    hits = lc_engine.search(text=QUERY, k=10)
    cut = hits[2].score
    docs = MMGapRetriever(engine=lc_engine, k=10, score_threshold=cut).invoke(QUERY)
    assert [d.id for d in docs] == [h.id for h in hits if h.score >= cut]
    assert all(d.metadata["relevance_score"] >= cut for d in docs)
    assert MMGapRetriever(engine=lc_engine, score_threshold=1e9).invoke(QUERY) == []


def test_from_store(lc_engine, tiny_encoder):
    retriever = MMGapRetriever.from_store(lc_engine.store, tiny_encoder, k=3)
    assert [d.id for d in retriever.invoke(QUERY)] == [
        h.id for h in lc_engine.search(text=QUERY, k=3)
    ]


# ---------------------------------------------------------------------------- image queries
def test_invoke_image_path_bytes_and_pil(retriever, lc_engine, sample_images):
    from PIL import Image

    path = next(p for p in sample_images if p.name == "chelsea.jpg")
    docs = retriever.invoke_image(path, k=5)
    assert [d.id for d in docs] == [h.id for h in lc_engine.search(image=path, k=5)]
    # The image itself is the best image match (cosine 1); where it ranks among the texts is
    # the default method's call.
    own = [d for d in docs if d.metadata["modality"] == "image"][0]
    assert own.id == _image_id(lc_engine, path)
    assert own.metadata["raw_score"] == pytest.approx(1.0, abs=1e-4)
    assert own.page_content == "a tabby cat"
    assert [d.id for d in retriever.invoke_image(path.read_bytes(), k=5)] == [d.id for d in docs]
    with Image.open(path) as img:
        assert [d.id for d in retriever.invoke_image(img.copy(), k=5)] == [d.id for d in docs]
    assert len(retriever.invoke_image(str(path), k=2, filter={"topic": "food"})) == 2
    # invoke_image is invoke with an image= keyword; the string is then only a label
    assert [d.id for d in retriever.invoke("my picture", image=path, k=5)] == [d.id for d in docs]


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.queries: list[str] = []
        self.results: list[list[str]] = []

    def on_retriever_start(self, serialized, query, **kwargs) -> None:
        self.queries.append(query)

    def on_retriever_end(self, documents, **kwargs) -> None:
        self.results.append([d.id for d in documents])


async def test_image_queries_reach_callbacks(retriever, sample_images):
    path = sample_images[0]
    recorder = _Recorder()
    docs = retriever.invoke_image(path, {"callbacks": [recorder]})
    adocs = await retriever.ainvoke_image(path, config={"callbacks": [recorder]})
    assert [d.id for d in adocs] == [d.id for d in docs]
    assert recorder.queries == [f"image: {path}"] * 2
    assert recorder.results == [[d.id for d in docs]] * 2
    as_bytes = path.read_bytes()
    retriever.invoke_image(as_bytes, {"callbacks": [recorder]})
    assert recorder.queries[-1] == f"image: <{len(as_bytes)} bytes>"


# ---------------------------------------------------------------------------- async
async def test_ainvoke_runs_off_the_event_loop(retriever, lc_engine, monkeypatch):
    threads: list[int] = []
    search = lc_engine.search

    def recording_search(*args, **kwargs):
        threads.append(threading.get_ident())
        return search(*args, **kwargs)

    monkeypatch.setattr(lc_engine, "search", recording_search)
    queries = [QUERY, "a rocket launching at dawn", "fresh bread"]
    results = await asyncio.gather(*(retriever.ainvoke(q, k=3) for q in queries))
    assert threading.get_ident() not in threads and len(threads) == 3
    for q, docs in zip(queries, results):
        assert [d.id for d in docs] == [h.id for h in search(text=q, k=3)]


# ---------------------------------------------------------------------------- composition
def _format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"[{d.metadata['modality']}] {d.page_content}" for d in docs)


def test_lcel_chain(retriever, lc_engine):
    chain = retriever | RunnableLambda(_format_docs)
    expected = _format_docs(retriever.invoke(QUERY))
    assert chain.invoke(QUERY) == expected
    assert expected.count("[") == 4

    prompt = PromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")
    rag = {"context": retriever | _format_docs, "question": RunnablePassthrough()} | prompt
    text = rag.invoke(QUERY).to_string()
    assert text.endswith(f"Question: {QUERY}") and expected in text


class _KeywordRetriever(BaseRetriever):
    """A plain second retriever: documents that share a word with the query."""

    docs: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        words = set(query.lower().split())
        return [d for d in self.docs if words & set(d.page_content.lower().split())]


async def test_inside_ensemble_retriever(retriever):
    from langchain_classic.retrievers import EnsembleRetriever

    keyword = _KeywordRetriever(
        docs=[
            Document(page_content="notes on cats and mats", id="kw-1"),
            Document(page_content="nothing relevant here", id="kw-2"),
        ]
    )
    ensemble = EnsembleRetriever(retrievers=[retriever, keyword], weights=[0.5, 0.5])
    docs = ensemble.invoke(QUERY)
    mmgap_docs = retriever.invoke(QUERY)
    contents = [d.page_content for d in docs]
    assert "notes on cats and mats" in contents and "nothing relevant here" not in contents
    assert set(contents) == {d.page_content for d in mmgap_docs} | {"notes on cats and mats"}
    by_content = {d.page_content: d for d in docs}
    for d in mmgap_docs:  # mmgap's metadata survives the fusion
        assert (
            by_content[d.page_content].metadata["relevance_score"] == d.metadata["relevance_score"]
        )
    assert [d.page_content for d in await ensemble.ainvoke(QUERY)] == contents


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("query", ["", "   "])
async def test_empty_query(retriever, query):
    with pytest.raises(ValueError, match="empty query"):
        retriever.invoke(query)
    with pytest.raises(ValueError, match="empty query"):
        await retriever.ainvoke(query)


def test_missing_image_path(retriever, tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ValueError, match="query image not found.*nope.png"):
        retriever.invoke_image(missing)
    with pytest.raises(ValueError, match="empty query"):
        retriever.invoke_image(None)
    with pytest.raises(ValueError, match="empty query"):
        retriever.invoke("label", image=None)


def test_unknown_fields_are_refused(lc_engine):
    with pytest.raises(ValidationError, match=r"top_k.*did you mean 'k'"):
        MMGapRetriever(engine=lc_engine, top_k=2)
    with pytest.raises(ValidationError, match=r"serch_kwargs.*did you mean 'search_kwargs'"):
        MMGapRetriever(engine=lc_engine, serch_kwargs={"k": 2})
    with pytest.raises(
        ValidationError, match=r"fetch_k.*k_per_modality.*accepted: k, k_per_modality, filter"
    ):
        MMGapRetriever(engine=lc_engine, search_kwargs={"fetch_k": 20})
    with pytest.raises(ValidationError, match="k is given twice"):
        MMGapRetriever(engine=lc_engine, k=3, search_kwargs={"k": 2})
    with pytest.raises(ValidationError, match="search_kwargs must be a dict"):
        MMGapRetriever(engine=lc_engine, search_kwargs=[("k", 2)])


def test_search_kwargs_like_a_vector_store_retriever(lc_engine, tiny_encoder):
    """``search_kwargs={"k": 2, "filter": ...}`` works as with ``VectorStoreRetriever``."""
    retriever = MMGapRetriever(engine=lc_engine, search_kwargs={"k": 2})
    assert retriever.k == 2 and retriever.search_kwargs["k"] == 2
    assert len(retriever.invoke(QUERY)) == 2
    food = MMGapRetriever(
        engine=lc_engine, search_kwargs={"k": 10, "filter": {"topic": "food"}, "method": "raw"}
    )
    assert food.search_kwargs == {
        "k": 10,
        "k_per_modality": None,
        "filter": {"topic": "food"},
        "score_threshold": None,
        "method": "raw",
        "modalities": None,
        "include_image_bytes": False,
    }
    docs = food.invoke(QUERY)
    assert len(docs) == 5 and {d.metadata["topic"] for d in docs} == {"food"}
    from_store = MMGapRetriever.from_store(lc_engine.store, tiny_encoder, search_kwargs={"k": 3})
    assert len(from_store.invoke(QUERY)) == 3
    with pytest.raises(ValidationError):  # the field's own check applies to search_kwargs too
        MMGapRetriever(engine=lc_engine, search_kwargs={"k": 0})


def test_method_is_checked_at_construction(lc_engine):
    with pytest.raises(ValidationError, match=r"'bogus'.*raw, standardize.*background-z"):
        MMGapRetriever(engine=lc_engine, method="bogus")
    with pytest.raises(ValidationError, match="mmgap eval"):
        MMGapRetriever(engine=lc_engine, method="standardize-gold")
    with pytest.raises(ValidationError, match="bogus"):
        MMGapRetriever(engine=lc_engine, search_kwargs={"method": "bogus"})
    retriever = MMGapRetriever(engine=lc_engine)
    assert (
        retriever.method == DEFAULT_METHOD and retriever.score_unit == METHODS[DEFAULT_METHOD].unit
    )
    with pytest.raises(ValueError, match="unknown fusion method 'bogus'"):
        retriever.invoke(QUERY, method="bogus")


def test_modalities_limit_the_same_ranking(retriever, lc_engine, sample_images):
    n_items = len(TEXTS) + len(sample_images)
    merged = retriever.invoke(QUERY, k=n_items)
    images = [d for d in merged if d.metadata["modality"] == "image"]
    only = retriever.invoke(QUERY, k=3, modalities=["image"])
    assert [d.id for d in only] == [d.id for d in images[:3]]
    assert [d.metadata["relevance_score"] for d in only] == pytest.approx(
        [d.metadata["relevance_score"] for d in images[:3]]
    )
    path = next(p for p in sample_images if p.name == "chelsea.jpg")
    similar = MMGapRetriever(engine=lc_engine, modalities=["image"], k=2).invoke_image(path)
    assert similar[0].page_content == "a tabby cat" and len(similar) == 2
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        retriever.invoke(QUERY, modalities=["video"])


@pytest.mark.parametrize("method", ["standardize", "rrf", "raw", "two-view-z"])
def test_every_method_mirrors_the_engine(lc_engine, method):
    retriever = MMGapRetriever(engine=lc_engine, method=method, k=6)
    docs = retriever.invoke(QUERY)
    hits = lc_engine.search(text=QUERY, k=6, method=method)
    assert [d.id for d in docs] == [h.id for h in hits]
    assert [d.metadata["relevance_score"] for d in docs] == pytest.approx([h.score for h in hits])
    assert retriever.score_unit == METHODS[method].unit


def test_bad_options(retriever, lc_engine):
    with pytest.raises(TypeError, match=r"unexpected search argument.*top_k"):
        retriever.invoke(QUERY, top_k=2)
    with pytest.raises(TypeError, match=r"unexpected search argument.*'text'"):
        retriever.invoke(QUERY, text="another query")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.invoke(QUERY, k=0)
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        MMGapRetriever(engine=lc_engine, k=0)
    with pytest.raises(ValueError):
        MMGapRetriever(engine="not an engine")


def test_uncalibrated_store_says_what_to_run(tiny_encoder, sample_images, tmp_path):
    store = ChromaStore.persistent(tmp_path / "chroma", "raw")
    engine = RetrievalEngine(store, tiny_encoder)
    engine.index(texts=list(TEXTS)[:3], images=sample_images[:2], progress=False)
    retriever = MMGapRetriever(engine=engine)
    with pytest.raises(NotCalibratedError, match=r"mmgap calibrate"):
        retriever.invoke(QUERY)
    assert len(MMGapRetriever(engine=engine, method="raw").invoke(QUERY)) == 4


def test_statistics_from_another_model(lc_engine, tiny_clip, tmp_path):
    from _fixtures_clip import make_tiny_checkpoint

    other = _encoder(
        tiny_clip, make_tiny_checkpoint(tiny_clip.config_path, tmp_path / "o.pt", seed=1)
    )
    assert other.model_id != lc_engine.model_id
    with pytest.raises(ValueError, match="statistics were fitted for model"):
        MMGapRetriever.from_store(lc_engine.store, other)


# ---------------------------------------------------------------------------- backends
def test_persistent_and_http_clients(chroma_client, chroma_store_name, tiny_encoder, sample_images):
    engine = RetrievalEngine(ChromaStore(chroma_client, chroma_store_name), tiny_encoder)
    _index_corpus(engine, sample_images)
    engine.calibrate(progress=False)
    retriever = MMGapRetriever(engine=engine, k=6)
    assert [d.id for d in retriever.invoke(QUERY)] == [h.id for h in engine.search(text=QUERY, k=6)]
