"""Multimodal documents through both adapters, on a real store.

The LangChain retriever gives the document's text as ``page_content`` with its image in metadata;
LlamaIndex gives an ``ImageNode`` with text."""

from __future__ import annotations

import pytest

from mmgap_core.engine import RetrievalEngine
from mmgap_core.store import ChromaStore

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

DESCRIPTIONS = [
    "an astronaut action figure in a white suit",
    "a bag of freshly roasted coffee beans",
    "a plush tabby cat toy",
    "a vintage camera with a leather strap",
]


@pytest.fixture
def engine(chroma_client, chroma_store_name, tiny_encoder, sample_images):
    engine = RetrievalEngine(ChromaStore(chroma_client, chroma_store_name), tiny_encoder)
    docs = [{"text": t, "image": p} for t, p in zip(DESCRIPTIONS, sample_images)]
    engine.index(
        texts=["a gift card for any occasion", "a warranty extension", "a red bowl"],
        images=sample_images[4:7],
        documents=docs,
        document_metadatas=[{"sku": f"p{i}"} for i in range(len(docs))],
        progress=False,
    )
    engine.calibrate(progress=False)
    return engine


def test_langchain_returns_documents_of_all_three_kinds(engine):
    from mmgap_langchain import MMGapRetriever

    docs = MMGapRetriever(engine=engine, k=10).invoke("a plush cat toy")
    kinds = {d.metadata["modality"] for d in docs}
    assert kinds == {"text", "image", "multimodal"}
    for d in docs:
        if d.metadata["modality"] == "multimodal":
            assert d.page_content in DESCRIPTIONS
            assert d.metadata["uri"] and d.metadata["mime_type"].startswith("image/")
            assert d.metadata["sku"].startswith("p")
            assert "base64" not in d.page_content


def test_llamaindex_returns_image_nodes_with_text(engine):
    from llama_index.core.schema import ImageNode, TextNode

    from mmgap_llamaindex import MMGapLlamaRetriever

    retriever = MMGapLlamaRetriever(engine, similarity_top_k=10)
    hits = retriever.retrieve("a plush cat toy")
    docs = [h for h in hits if h.node.metadata.get("modality") == "multimodal"]
    assert docs and len({h.node.metadata["modality"] for h in hits}) == 3
    for h in docs:
        assert isinstance(h.node, ImageNode)
        assert h.node.text in DESCRIPTIONS and h.node.image_path
    texts = [h for h in hits if h.node.metadata.get("modality") == "text"]
    assert all(isinstance(h.node, TextNode) and not isinstance(h.node, ImageNode) for h in texts)
    # "image" retrieval covers images and documents: the same merged ranking, filtered
    images = retriever.text_to_image_retrieve("a plush cat toy")
    assert {h.node.metadata["modality"] for h in images} <= {"image", "multimodal"}
