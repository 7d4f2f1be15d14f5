"""The seams of the reproduce package: the per-model run object, the cache's atomic writes and
the context-pool ranking in mining."""

from __future__ import annotations

import numpy as np
import pytest

from mmgap_core.datasets import limit_dataset, load_mmqa
from mmgap_core.mining import ModalityTopK, context_candidates
from mmgap_core.reproduce import EmbeddingCache, ModelRun, RunOptions, reproduce
from mmgap_core.reproduce import cache as cache_module


def _reference(queries, corpus, labels, pools, modalities=("text", "image")) -> ModalityTopK:
    """Each pool sorted by raw dot product, ties by the lower corpus row (the earlier algorithm)."""
    n_q = queries.shape[0]
    rows = [np.asarray(p, dtype=np.int64) for p in pools]
    width = max([1] + [int((labels[r] == m).sum()) for r in rows for m in modalities])
    indices = np.full((n_q, len(modalities), width), -1, dtype=np.int64)
    scores = np.full((n_q, len(modalities), width), -np.inf, dtype=np.float32)
    for qi, r in enumerate(rows):
        if not r.size:
            continue
        s, lab = corpus[r] @ queries[qi], labels[r]
        for j, m in enumerate(modalities):
            sel = lab == m
            order = np.lexsort((r[sel], -s[sel]))
            indices[qi, j, : order.size] = r[sel][order]
            scores[qi, j, : order.size] = s[sel][order]
    return ModalityTopK(list(modalities), indices, scores)


def test_context_candidates_matches_a_per_pool_sort():
    rng = np.random.default_rng(7)
    corpus = rng.standard_normal((400, 16)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    corpus[3] = corpus[250]  # a tie across modalities and one inside a modality
    corpus[10] = corpus[11]
    labels = np.array(["text"] * 200 + ["image"] * 200)
    queries = rng.standard_normal((60, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    pools = [rng.choice(400, size=rng.integers(1, 40), replace=False).tolist() for _ in range(60)]
    pools[0], pools[1], pools[2] = [250, 3, 11, 10], [], [399]  # ties, empty, one modality
    got = context_candidates(queries, corpus, labels, pools)
    want = _reference(queries, corpus, labels, pools)
    assert got.modalities == ["text", "image"]
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    text_of_first = got.indices[0, 0].tolist()
    assert text_of_first.index(10) + 1 == text_of_first.index(11)  # a tie: the lower row first
    assert got.indices[1].max() == -1 and got.indices[2, 0].max() == -1


def test_context_candidates_rejects_bad_pools():
    corpus = np.eye(3, dtype=np.float32)
    labels = np.array(["text", "image", "image"])
    with pytest.raises(ValueError, match="one pool per query"):
        context_candidates(corpus[:2], corpus, labels, [[0]])
    with pytest.raises(ValueError, match=r"corpus rows must be in \[0, 2\]"):
        context_candidates(corpus[:1], corpus, labels, [[0, 3]])


def test_model_run_is_usable_on_its_own(mmqa_root, tiny_encoder):
    data = limit_dataset(load_mmqa(mmqa_root), 4)
    options = RunOptions(pool="context", methods=["raw", "standardize"], ks=(1, 5), progress=False)
    run = ModelRun(data, tiny_encoder, "tiny", EmbeddingCache(None), options)
    result = run.run()
    assert result.query_counts == {"text": 4, "image": 4} and len(run.kept) == 8
    assert run.queries.shape == (8, tiny_encoder.dim)
    assert result.n_embedded == run.n_embedded > 0 and result.n_from_cache == 0
    assert result.corpus_counts == {"text": len(run.text_rows), "image": len(run.image_rows)}
    # the same numbers as the driver
    report = reproduce(data, tiny_encoder, methods="raw,standardize", ks=(1, 5), progress=False)
    assert report.models[tiny_encoder.model_id].report.results == result.report.results


def test_cache_writes_are_atomic(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)
    vec = {"t:a": np.ones(4, dtype=np.float32)}
    path = cache.save("m", "text", "f", vec, {"t:b": "too long"}, 4)
    assert path.name == "f.npz" and cache.load("m", "text", ["t:a", "t:b"])[1] == {
        "t:b": "too long"
    }
    before = path.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        cache.save("m", "text", "f", {"t:c": np.zeros(4, dtype=np.float32)}, {}, 4)
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.npz"]  # no temporary left
    assert EmbeddingCache(None).save("m", "text", "f", vec, {}, 4) is None
