"""LangChain users' path: a store built with ``langchain_chroma.Chroma`` (``add_images`` +
``add_texts``) and mmgap's ``OpenClipEmbeddings``, wrapped by ``MMGapRetriever`` without
re-indexing, calibrated once, and found calibrated again by a fresh process-like object.

Everything goes through LangChain's own entry points (``Chroma``, ``invoke``, LCEL,
``create_retriever_tool``) on the tiny random-weight open_clip model (no downloads).
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("open_clip")
chromadb = pytest.importorskip("chromadb")
langchain_chroma = pytest.importorskip("langchain_chroma")

from langchain_core.runnables import RunnableLambda  # noqa: E402
from langchain_core.tools import create_retriever_tool  # noqa: E402

from mmgap_core.engine import Hit, NotCalibratedError, RetrievalEngine  # noqa: E402
from mmgap_core.store.chroma import ChromaStore  # noqa: E402
from mmgap_langchain import (  # noqa: E402
    IMAGE_BASE64_KEY,
    MMGapRetriever,
    OpenClipEmbeddings,
    hit_to_document,
)

TEXTS = {
    "a cat sleeping on a warm windowsill": "animals",
    "a dog chasing a red ball in the park": "animals",
    "a cup of hot coffee with milk foam": "food",
    "fresh bread from the bakery": "food",
    "an astronaut floating outside the station": "space",
    "a rocket launching at dawn": "space",
}
# add_images metadata by file name; LangChain keeps no path, so some give one as "source".
TITLED = {
    "astronaut.png": {"title": "an astronaut in a white suit", "topic": "space"},
    "coffee.jpg": {"title": "a cup of coffee", "topic": "food"},
    "chelsea.jpg": {"caption": "a tabby cat", "topic": "animals"},
}
QUERY = "a cat sitting on a mat"


def _image_metadata(path: Path) -> dict:
    if path.name in TITLED:
        return {**TITLED[path.name], "source": str(path)}
    if path.suffix == ".png":
        return {"source": str(path)}  # no caption: the path is the page content
    return {}  # nothing at all (LangChain stores no metadata for these)


@pytest.fixture(scope="module")
def clip(tiny_clip) -> OpenClipEmbeddings:
    """Built from model name + checkpoint + config, the way users load a custom model."""
    return OpenClipEmbeddings(
        tiny_clip.model_name,
        pretrained=str(tiny_clip.checkpoint_path),
        model_config=str(tiny_clip.config_path),
        device="cpu",
        batch_size=8,
    )


@pytest.fixture(scope="module")
def lc_store(clip, sample_images, tmp_path_factory):
    """(path, client, Chroma vector store, image ids, text ids), built by LangChain alone."""
    path = tmp_path_factory.mktemp("lc-built")
    client = chromadb.PersistentClient(path=str(path))
    store = langchain_chroma.Chroma("photos", embedding_function=clip, client=client)
    image_ids = store.add_images(
        [str(p) for p in sample_images], metadatas=[_image_metadata(p) for p in sample_images]
    )
    text_ids = store.add_texts(list(TEXTS), metadatas=[{"topic": t} for t in TEXTS.values()])
    yield path, client, store, dict(zip(image_ids, sample_images)), text_ids
    client.close()


@pytest.fixture(scope="module")
def lc_retriever(lc_store, clip) -> MMGapRetriever:
    _, client, _, _, _ = lc_store
    return MMGapRetriever.from_langchain_chroma(client, "photos", clip, k=4)


# ---------------------------------------------------------------------------- embeddings
async def test_embeddings_are_the_encoders(clip, sample_images, tmp_path):
    encoder = clip.encoder
    texts = ["a red square", "the sea"]
    images = [str(p) for p in sample_images[:3]]
    expected_text = encoder.embed_texts(texts).vectors
    expected_image = encoder.embed_images(images).vectors
    assert np.allclose(clip.embed_documents(texts), expected_text, atol=1e-5)
    assert np.allclose(clip.embed_query("the sea"), expected_text[1], atol=1e-5)
    assert np.allclose(clip.embed_image(uris=images), expected_image, atol=1e-5)
    assert np.allclose(await clip.aembed_documents(texts), expected_text, atol=1e-5)
    assert np.allclose(await clip.aembed_query("a red square"), expected_text[0], atol=1e-5)
    assert np.allclose(await clip.aembed_image(images), expected_image, atol=1e-5)
    as_bytes = sample_images[0].read_bytes()
    assert np.allclose(clip.embed_image([as_bytes]), expected_image[:1], atol=1e-5)
    assert clip.embed_documents([]) == [] and clip.embed_image([]) == []
    assert clip.model_id == encoder.model_id and clip.dim == len(expected_text[0])
    wrapped = OpenClipEmbeddings(encoder=encoder)
    assert wrapped.encoder is encoder and wrapped.embed_query("x") == clip.embed_query("x")

    with pytest.raises(ValueError, match="empty"):
        clip.embed_query("  ")
    with pytest.raises(ValueError, match="could not be embedded"):
        clip.embed_documents(["fine", ""])
    with pytest.raises(ValueError, match="missing.png"):
        clip.embed_image([str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="a list of images"):
        clip.embed_image(images[0])
    with pytest.raises(ValueError, match="not both"):
        OpenClipEmbeddings(encoder=encoder, device="cpu")
    with pytest.raises(ValueError, match="has no embed_texts"):
        OpenClipEmbeddings(encoder=object())


def test_langchain_chroma_indexes_with_embed_image(lc_store, clip):
    """add_images stored exactly the vectors embed_image gives (and add_texts embed_documents)."""
    _, _, store, image_ids, text_ids = lc_store
    got = store.get(ids=list(image_ids), include=["embeddings"])
    by_id = dict(zip(got["ids"], got["embeddings"]))
    expected = clip.embed_image([str(image_ids[i]) for i in image_ids])
    assert np.allclose([by_id[i] for i in image_ids], expected, atol=1e-5)
    got = store.get(ids=text_ids, include=["embeddings", "documents"])
    assert np.allclose(got["embeddings"], clip.embed_documents(got["documents"]), atol=1e-5)


# ---------------------------------------------------------------------------- the wrapped store
def test_wraps_without_reindexing_and_calibrates(lc_store, lc_retriever, sample_images):
    _, client, store, image_ids, text_ids = lc_store
    assert len(store.get()["ids"]) == len(image_ids) + len(text_ids)  # nothing was added
    engine = lc_retriever.engine
    assert engine.store.layout == "langchain-images" and engine.is_calibrated
    assert engine.calibration.corpus_sizes == {"image": len(image_ids), "text": len(text_ids)}
    n_items = len(image_ids) + len(text_ids)
    docs = lc_retriever.invoke(QUERY, k=n_items)
    hits = engine.search(text=QUERY, k=n_items)
    assert [d.id for d in docs] == [h.id for h in hits]
    assert {d.id for d in docs} == set(image_ids) | set(text_ids)  # LangChain's own ids
    assert {d.metadata["modality"] for d in lc_retriever.invoke(QUERY)} == {"image", "text"}


def test_image_page_content_is_never_base64(lc_store, lc_retriever):
    _, _, _, image_ids, text_ids = lc_store
    docs = lc_retriever.invoke(QUERY, k=len(image_ids) + len(text_ids))
    images = {image_ids[d.id].name: d for d in docs if d.metadata["modality"] == "image"}
    assert len(images) == len(image_ids)
    assert images["astronaut.png"].page_content == "an astronaut in a white suit"
    assert images["chelsea.jpg"].page_content == "a tabby cat"
    assert images["camera.png"].page_content == images["camera.png"].metadata["uri"]
    assert images["camera.png"].metadata["uri"].endswith("camera.png")
    no_meta = images["solid_blue.jpg"]
    assert no_meta.page_content == f"image {no_meta.id}" and no_meta.metadata["uri"] is None
    assert no_meta.metadata["mime_type"] == "image/jpeg"  # told from the stored bytes
    for doc in images.values():
        assert len(doc.page_content) < 300
        assert IMAGE_BASE64_KEY not in doc.metadata
    assert images["astronaut.png"].metadata["mime_type"] == "image/png"


def test_image_bytes_only_when_asked(lc_store, lc_retriever):
    _, _, _, image_ids, _ = lc_store
    docs = lc_retriever.invoke(QUERY, k=20, include_image_bytes=True)
    images = [d for d in docs if d.metadata["modality"] == "image"]
    assert len(images) == len(image_ids)
    for doc in images:
        data = base64.b64decode(doc.metadata[IMAGE_BASE64_KEY])
        assert data == image_ids[doc.id].read_bytes()
        assert len(doc.page_content) < 300
    assert all(IMAGE_BASE64_KEY not in d.metadata for d in docs if d not in images)
    with_bytes = MMGapRetriever(engine=lc_retriever.engine, include_image_bytes=True, k=20)
    assert [d.metadata.get(IMAGE_BASE64_KEY) for d in with_bytes.invoke(QUERY)] == [
        d.metadata.get(IMAGE_BASE64_KEY) for d in docs
    ]


def test_retriever_tool_output_fits_an_llm(lc_store, lc_retriever):
    """k=14 over images stored as ~50-600 KB base64 documents: the tool returns short text."""
    _, _, _, image_ids, text_ids = lc_store
    tool = create_retriever_tool(
        MMGapRetriever(engine=lc_retriever.engine, k=len(image_ids) + len(text_ids)),
        "photos",
        "Search the photo and note collection.",
    )
    out = tool.invoke({"query": QUERY})
    assert isinstance(out, str) and len(out) < 3000
    assert "a tabby cat" in out and "a cat sleeping on a warm windowsill" in out
    assert "iVBORw0KGgo" not in out and "/9j/" not in out


def test_lcel_over_the_langchain_store(lc_retriever):
    def format_docs(docs):
        return "\n".join(f"[{d.metadata['modality']}] {d.page_content}" for d in docs)

    chain = lc_retriever | RunnableLambda(format_docs)
    text = chain.invoke(QUERY)
    assert text.count("\n") == 3 and len(text) < 1000


def test_image_query_over_the_langchain_store(lc_store, lc_retriever, sample_images):
    _, _, _, image_ids, _ = lc_store
    path = next(p for p in sample_images if p.name == "coffee.jpg")
    docs = lc_retriever.invoke_image(path, k=6)
    own = [d for d in docs if d.metadata["modality"] == "image"][0]
    assert image_ids[own.id] == path and own.page_content == "a cup of coffee"
    assert own.metadata["raw_score"] == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------------- persistence
def test_calibration_survives_a_restart(lc_store, lc_retriever, clip):
    path, client, _, _, _ = lc_store
    names = {c.name for c in client.list_collections()}
    assert names == {"photos", "photos-calibration-mmgap"}
    # A new client on the same folder stands for a new process.
    fresh = MMGapRetriever.from_langchain_chroma(
        chromadb.PersistentClient(path=str(path)), "photos", clip, calibrate=False, k=4
    )
    assert fresh.engine.calibration == lc_retriever.engine.calibration
    assert [d.id for d in fresh.invoke(QUERY)] == [d.id for d in lc_retriever.invoke(QUERY)]


def test_persistence_is_opt_out(lc_store, clip):
    _, client, _, _, _ = lc_store
    before = {c.name for c in client.list_collections()}
    retriever = MMGapRetriever.from_langchain_chroma(
        client, "photos", clip, persist_calibration=False, calibration_sample=4
    )
    assert retriever.engine.is_calibrated
    assert retriever.engine.calibration.provenance.calibration_queries == {"image": 4, "text": 4}
    assert retriever.engine.store.calibration_collection is None
    assert {c.name for c in client.list_collections()} == before
    assert len(retriever.invoke(QUERY)) == 4


def test_statistics_from_another_model_are_refused(lc_store, tiny_clip, tmp_path):
    from _fixtures_clip import make_tiny_checkpoint

    _, client, _, _, _ = lc_store
    other = OpenClipEmbeddings(
        tiny_clip.model_name,
        pretrained=str(make_tiny_checkpoint(tiny_clip.config_path, tmp_path / "o.pt", seed=1)),
        model_config=str(tiny_clip.config_path),
        device="cpu",
    )
    with pytest.raises(ValueError, match="statistics were fitted for model"):
        MMGapRetriever.from_langchain_chroma(client, "photos", other)


def test_other_embeddings_are_refused(lc_store):
    from langchain_core.embeddings import FakeEmbeddings

    _, client, _, _, _ = lc_store
    with pytest.raises(ValueError, match="OpenClipEmbeddings"):
        MMGapRetriever.from_langchain_chroma(client, "photos", FakeEmbeddings(size=32))
    with pytest.raises(ValueError, match="not found|does not exist"):
        MMGapRetriever.from_langchain_chroma(client, "no-such-collection", FakeEmbeddings(size=32))


# ---------------------------------------------------------------------------- issue 11 item 9
def test_images_added_after_calibration(clip, sample_images, tmp_path, caplog):
    """Index texts, calibrate, add images, search: a NotCalibratedError naming the fix, or a
    recalibration with auto_recalibrate=True, which is persisted for the next process."""
    path = tmp_path / "db"
    client = chromadb.PersistentClient(path=str(path))
    store = langchain_chroma.Chroma("notes", embedding_function=clip, client=client)
    store.add_texts(list(TEXTS))
    with caplog.at_level(logging.WARNING):
        texts_only = MMGapRetriever.from_langchain_chroma(client, "notes", clip)
    assert "holds text items only" in caplog.text
    assert {d.metadata["modality"] for d in texts_only.invoke(QUERY)} == {"text"}

    store.add_images([str(p) for p in sample_images[:4]])
    later = MMGapRetriever.from_langchain_chroma(
        chromadb.PersistentClient(path=str(path)), "notes", clip
    )
    with pytest.warns(UserWarning, match="grew"), pytest.raises(NotCalibratedError) as err:
        later.invoke(QUERY)
    message = str(err.value)
    assert "image" in message and "engine.calibrate()" in message
    assert "auto_recalibrate=True" in message

    auto = MMGapRetriever.from_langchain_chroma(client, "notes", clip, auto_recalibrate=True, k=10)
    docs = auto.invoke(QUERY)
    assert {d.metadata["modality"] for d in docs} == {"image", "text"}
    assert auto.engine.calibration.corpus_sizes == {"image": 4, "text": len(TEXTS)}
    restarted = MMGapRetriever.from_langchain_chroma(
        chromadb.PersistentClient(path=str(path)), "notes", clip, calibrate=False, k=10
    )
    assert [d.id for d in restarted.invoke(QUERY)] == [d.id for d in docs]
    client.close()


def test_a_calibration_of_another_layout_is_ignored(lc_store, lc_retriever, caplog):
    """The saved calibration records which view it belongs to: another view of the same
    collection (here read as a mixed collection) does not take it."""
    from mmgap_core.store import ForeignLayout

    _, client, _, _, _ = lc_store
    assert ForeignLayout.langchain_images(client, "photos").load_calibration() is not None
    with caplog.at_level(logging.WARNING):
        assert ForeignLayout.mixed(client, "photos").load_calibration() is None
    assert "ignoring the calibration" in caplog.text and "langchain-images" in caplog.text


# ---------------------------------------------------------------------------- hits and mmgap stores
def test_multimodal_hit_document(sample_images):
    """A multimodal document (a text with its image): the text is the page content, the image
    is described in metadata, its bytes added only when asked."""
    image = next(p for p in sample_images if p.name == "coffee.jpg")
    hit = Hit(
        id="doc-1",
        modality="multimodal",
        score=1.5,
        raw_score=0.31,
        rank=1,
        text="Espresso cup, 90 ml, white porcelain.",
        uri=str(image),
        metadata={"mime_type": "image/jpeg", "sku": "E-90", "modality": "multimodal"},
    )
    doc = hit_to_document(hit)
    assert doc.id == "doc-1" and doc.page_content == "Espresso cup, 90 ml, white porcelain."
    assert doc.metadata["modality"] == "multimodal" and doc.metadata["uri"] == str(image)
    assert doc.metadata["mime_type"] == "image/jpeg" and doc.metadata["sku"] == "E-90"
    assert doc.metadata["relevance_score"] == 1.5 and doc.metadata["raw_score"] == 0.31
    assert IMAGE_BASE64_KEY not in doc.metadata
    with_bytes = hit_to_document(hit, include_image_bytes=True)
    assert base64.b64decode(with_bytes.metadata[IMAGE_BASE64_KEY]) == image.read_bytes()
    # Without its text part (e.g. blank), the caption/path rules of an image apply.
    blank = hit_to_document(Hit("doc-2", "multimodal", 1.0, 0.3, 2, text=" ", uri=str(image)))
    assert blank.page_content == str(image)
    # A text hit never gets image bytes; a missing image file just leaves them out.
    text = hit_to_document(Hit("t", "text", 1.0, 0.3, 3, text="hello"), include_image_bytes=True)
    assert text.page_content == "hello" and IMAGE_BASE64_KEY not in text.metadata
    gone = Hit("i", "image", 1.0, 0.3, 4, uri="/nonexistent/x.png")
    assert IMAGE_BASE64_KEY not in hit_to_document(gone, include_image_bytes=True).metadata


def test_modality_added_after_calibration(tiny_encoder, sample_images, tmp_path, caplog):
    """Index texts, calibrate, add images, search: NotCalibratedError naming the fix, or a
    recalibration with auto_recalibrate=True."""
    store = ChromaStore.persistent(tmp_path / "chroma", "late")
    engine = RetrievalEngine(store, tiny_encoder)
    engine.index(texts=list(TEXTS), progress=False)
    with caplog.at_level(logging.WARNING):
        engine.calibrate(progress=False)
    assert "holds text items only" in caplog.text
    engine.index(images=sample_images[:3], progress=False)
    retriever = MMGapRetriever(engine=engine)
    with pytest.warns(UserWarning, match="grew"), pytest.raises(NotCalibratedError) as err:
        retriever.invoke(QUERY)
    assert "engine.calibrate()" in str(err.value) and "auto_recalibrate=True" in str(err.value)
    auto = MMGapRetriever.from_store(
        ChromaStore.persistent(tmp_path / "chroma", "late"), tiny_encoder, auto_recalibrate=True
    )
    docs = auto.invoke(QUERY, k=len(TEXTS) + 3)
    assert {d.metadata["modality"] for d in docs} == {"image", "text"}
    assert auto.engine.calibration.corpus_sizes == {"image": 3, "text": len(TEXTS)}
