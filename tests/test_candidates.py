"""CandidateBatch constructors: from mining output and from store hits, the same fused rankings as
the hand conversions they replace."""

from __future__ import annotations

import numpy as np
import pytest

from mmgap_core.background import BackgroundScale
from mmgap_core.candidates import CandidateBatch, ModalityCandidates
from mmgap_core.evaluation_calibration import fit_centered_scale_from_arrays
from mmgap_core.fusion import METHOD_NAMES, CenterFusion, make_method
from mmgap_core.mining import mine_pseudo_positives, topk_per_modality
from mmgap_core.simulator import simulate
from mmgap_core.stats import ModalityStandardizer
from mmgap_core.store.base import ModalityHits

ENGINE_METHODS = [m for m in METHOD_NAMES if m != "standardize-gold"]


@pytest.fixture(scope="module")
def data():
    return simulate("small-gap")


@pytest.fixture(scope="module")
def methods(data):
    scores, labels = mine_pseudo_positives(data.queries, data.corpus, data.modalities).pairs()
    std = ModalityStandardizer().fit(scores, labels, "text")
    means = CenterFusion.fit(data.corpus, data.modalities, {"text": data.queries.mean(0)}).means
    top = topk_per_modality(data.queries, data.corpus, data.modalities, 30)
    sizes = {m: int((data.modalities == m).sum()) for m in top.modalities}
    bg = BackgroundScale().fit({m: top.of(m)[1] for m in top.modalities}, "text", sizes)
    centred = fit_centered_scale_from_arrays(
        data.queries, top.indices, data.corpus, top.modalities, means, "text", sizes
    )
    return {
        name: make_method(
            name,
            standardizer=std,
            gold_standardizer=std,
            center_means=means,
            background_scale=bg,
            corpus_sizes=sizes,
            centered_scale=centred,
        )
        for name in METHOD_NAMES
    }


def _hand_batch_from_topk(topk, qm, queries, corpus, s, e):
    # What evaluation.evaluate_candidates did before CandidateBatch.from_topk.
    def lookup(_modality, ids):
        return corpus[np.where(ids >= 0, ids, 0)]

    return CandidateBatch(
        qm,
        {m: ModalityCandidates(*(a[s:e] for a in topk.of(m))) for m in topk.modalities},
        query_embeddings=queries[s:e],
        candidate_embeddings=lookup,
    )


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_from_topk_fuses_like_the_hand_conversion(data, methods, name):
    topk = topk_per_modality(data.queries, data.corpus, data.modalities, 20)
    for s, e in ((0, data.queries.shape[0]), (3, 17)):
        hand = _hand_batch_from_topk(topk, "text", data.queries, data.corpus, s, e)
        built = CandidateBatch.from_topk(
            topk, "text", rows=slice(s, e), query_embeddings=data.queries, corpus=data.corpus
        )
        a, b = methods[name].fuse(hand, 10), methods[name].fuse(built, 10)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.modality_codes, b.modality_codes)
        assert a.modalities == b.modalities


def test_from_topk_without_embeddings_has_no_lookup(data):
    topk = topk_per_modality(data.queries[:4], data.corpus, data.modalities, 5)
    batch = CandidateBatch.from_topk(topk, "text")
    assert batch.n_queries == 4 and batch.modalities == list(topk.modalities)
    assert batch.query_embeddings is None and batch.candidate_embeddings is None
    with pytest.raises(ValueError, match="center needs query embeddings"):
        make_method("center", center_means={"text": np.zeros(3)}).fuse(batch, 3)


def _hits_from_topk(topk, corpus, q: int, k: dict[str, int], embeddings: bool) -> dict:
    """Store-shaped hits for query ``q``: short rows where a modality has fewer than k items."""
    out = {}
    for m in topk.modalities:
        idx, sc = topk.of(m)
        row = [int(i) for i in idx[q, : k[m]] if i >= 0]
        scores = np.full((1, k[m]), -np.inf, dtype=np.float32)
        scores[0, : len(row)] = sc[q, : len(row)]
        emb = None
        if embeddings:
            emb = np.zeros((1, k[m], corpus.shape[1]), dtype=np.float32)
            emb[0, : len(row)] = corpus[row]
        out[m] = ModalityHits(
            modality=m,
            ids=[[f"{m}-{i}" for i in row]],
            scores=scores,
            documents=[[None] * len(row)],
            uris=[[None] * len(row)],
            metadatas=[[{}] * len(row)],
            embeddings=emb,
        )
    return out


def _hand_batch_from_hits(hits, qm, vec):
    # What engine._merge did before CandidateBatch.from_hits.
    lists, emb = {}, {}
    for m, h in hits.items():
        n = len(h.ids[0])
        ids = np.where(np.arange(h.k) < n, np.arange(h.k), -1)[None, :]
        lists[m] = ModalityCandidates(ids, np.where(ids >= 0, h.scores[:, : h.k], 0.0))
        emb[m] = h.embeddings
    return CandidateBatch(
        qm,
        lists,
        query_embeddings=vec,
        candidate_embeddings=lambda m, ids: emb[m][:, : ids.shape[1]],
    )


@pytest.mark.parametrize("name", ENGINE_METHODS)
def test_from_hits_fuses_like_the_hand_conversion(data, methods, name):
    topk = topk_per_modality(data.queries, data.corpus, data.modalities, 30)
    k = {m: 30 for m in topk.modalities}
    for q in range(5):
        hits = _hits_from_topk(topk, data.corpus, q, k, embeddings=True)
        vec = data.queries[q : q + 1]
        a = methods[name].fuse(_hand_batch_from_hits(hits, "text", vec), 8)
        b = methods[name].fuse(CandidateBatch.from_hits(hits, "text", vec), 8)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.modality_codes, b.modality_codes)


def test_from_hits_handles_short_rows_and_several_queries(data):
    topk = topk_per_modality(data.queries[:3], data.corpus, data.modalities, 6)
    per_query = [
        _hits_from_topk(topk, data.corpus, q, {"text": 6, "image": 6}, embeddings=False)
        for q in range(3)
    ]
    per_query[1]["image"].ids[0] = per_query[1]["image"].ids[0][:2]  # a short row
    per_query[1]["image"].scores[0, 2:] = -np.inf
    hits = {
        m: ModalityHits(
            modality=m,
            ids=[p[m].ids[0] for p in per_query],
            scores=np.concatenate([p[m].scores for p in per_query]),
            documents=[p[m].documents[0] for p in per_query],
            uris=[p[m].uris[0] for p in per_query],
            metadatas=[p[m].metadatas[0] for p in per_query],
        )
        for m in ("text", "image")
    }
    batch = CandidateBatch.from_hits(hits, "text")
    assert batch.n_queries == 3 and batch.candidate_embeddings is None
    assert batch.lists["image"].ids[1].tolist() == [0, 1, -1, -1, -1, -1]
    assert batch.lists["image"].ids[0].tolist() == list(range(6))
    fused = make_method("raw").fuse(batch, 12)
    assert (fused.ids[1] >= 0).sum() == 8  # 6 texts + 2 images


def test_from_hits_of_an_empty_modality():
    hits = {
        "text": ModalityHits(
            "text",
            [["a", "b"]],
            np.asarray([[0.5, 0.4]], np.float32),
            [[None, None]],
            [[None, None]],
            [[{}, {}]],
        ),
        "image": ModalityHits.empty("image", 1, 0),
    }
    fused = make_method("raw").fuse(CandidateBatch.from_hits(hits, "text"), 5)
    assert fused.ids[0].tolist()[:2] == [0, 1] and fused.modalities == ["text", "image"]
