"""Streamed exact calibration mining: equal to whole-corpus mining, bounded memory, real Chroma."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmgap_core.background import BackgroundScale
from mmgap_core.calibration import CalibrationFormatError, CalibrationRecord, Provenance
from mmgap_core.background_math import BACKGROUND_RANKS
from mmgap_core.calibration.fitting import (
    QuerySet,
    fit_calibration,
    load_corpus,
    resolve_mining,
    sample_query_sets,
)
from mmgap_core.calibration.streaming import (
    MIN_MEMORY_BUDGET,
    StreamingTopK,
    StreamPlan,
    mine_store_exact,
)
from mmgap_core.mining import topk_per_modality
from mmgap_core.stats import ModalityStandardizer

MiB = 2**20


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def stream(queries, parts, k, chunk, exclude=None, interleave=False):
    """Feed ``parts`` ([(modality, rows)] in corpus order) to a StreamingTopK in chunks."""
    mods = list(dict.fromkeys(m for m, _ in parts))
    acc = StreamingTopK(queries, mods, k, block_bytes=MiB)
    start = 0
    pieces = []
    for m, rows in parts:
        for s in range(0, rows.shape[0], chunk):
            pieces.append((m, rows[s : s + chunk], start + s))
        start += rows.shape[0]
    if interleave:  # corpus order is the order chunks are added: renumber accordingly
        pieces = pieces[::2] + pieces[1::2]
    corpus, labels, order = [], [], []
    for m, blk, first in pieces:
        ex = None
        if exclude is not None:  # original row numbers -> this chunk's rows
            local = exclude - first
            ex = np.where((local >= 0) & (local < blk.shape[0]), local, -1)
        acc.add(m, blk, ex)
        corpus.append(blk)
        labels.extend([m] * blk.shape[0])
        order.append(np.arange(first, first + blk.shape[0]))
    return acc.result(), np.concatenate(corpus), np.asarray(labels), np.concatenate(order), mods


def assert_same(got, want, exact=True):
    """Equal top-k. Not ``exact``: BLAS may round a dot product differently for another block
    shape (1 ulp), so scores agree to 1e-6 and an index may differ only at such a near-tie."""
    assert got.modalities == want.modalities
    if exact:
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.scores, want.scores)
        return
    np.testing.assert_array_equal(got.indices >= 0, want.indices >= 0)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)
    differ = got.indices != want.indices
    assert differ.mean() < 0.01, f"{differ.sum()} of {differ.size} picks differ"


def whole(queries, corpus, labels, order, k, exclude, mods):
    """topk_per_modality on the concatenated chunks, with exclude renumbered to that order."""
    ex = None
    if exclude is not None:
        pos = np.full(order.size, -1, dtype=np.int64)
        pos[order] = np.arange(order.size)
        ex = np.where(exclude >= 0, pos[np.maximum(exclude, 0)], -1)
    return topk_per_modality(queries, corpus, labels, k, exclude=ex, modalities=mods)


@pytest.mark.parametrize("chunk", [1, 7, 64, 300, 5000])
@pytest.mark.parametrize("k", [1, 5, 50])
@pytest.mark.parametrize("interleave", [False, True])
def test_streaming_equals_whole_corpus(chunk, k, interleave):
    rng = np.random.default_rng(chunk * 100 + k)
    text = unit(rng.standard_normal((700, 24)) + 2 * np.eye(24)[0])
    image = rng.standard_normal((400, 24)) * 3  # not unit length: cosine all the same
    queries = rng.standard_normal((37, 24)).astype(np.float32)
    exclude = rng.integers(-1, 1100, size=37)
    queries[exclude >= 0] = np.concatenate([text, image])[exclude[exclude >= 0]]
    got, corpus, labels, order, mods = stream(
        queries, [("text", text), ("image", image)], k, chunk, exclude, interleave
    )
    assert_same(got, whole(queries, corpus, labels, order, k, exclude, mods), exact=False)


def quarter(rng, n):
    """Unit vectors of four +-0.5 entries: every cosine is a multiple of 1/4, exactly in float32
    whatever the BLAS kernel, so scores must match bit for bit and ties abound."""
    x = np.zeros((n, 8), dtype=np.float32)
    for r in range(n):
        x[r, rng.choice(8, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


@pytest.mark.parametrize("chunk", [1, 3, 16, 100])
def test_ties_go_to_the_lower_row_in_iteration_order(chunk):
    rng = np.random.default_rng(chunk)
    text, image, queries = quarter(rng, 150), quarter(rng, 90), quarter(rng, 20)
    exclude = np.arange(20) * 7  # text rows, some exact duplicates of others
    queries[:] = text[exclude]
    for k in (1, 4, 50):
        got, corpus, labels, order, mods = stream(
            queries, [("text", text), ("image", image)], k, chunk, exclude
        )
        assert_same(got, whole(queries, corpus, labels, order, k, exclude, mods))
        assert (got.scores[:, :, :-1] >= got.scores[:, :, 1:]).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_text=st.integers(1, 40),
    n_image=st.integers(1, 40),
    n_q=st.integers(1, 12),
    k=st.integers(1, 12),
    chunk=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_streaming_property(n_text, n_image, n_q, k, chunk, seed):
    rng = np.random.default_rng(seed)
    text, image, queries = quarter(rng, n_text), quarter(rng, n_image), quarter(rng, n_q)
    exclude = rng.integers(-1, n_text + n_image, size=n_q)
    got, corpus, labels, order, mods = stream(
        queries, [("text", text), ("image", image)], k, chunk, exclude
    )
    assert_same(got, whole(queries, corpus, labels, order, k, exclude, mods))


def test_streaming_checks_its_input():
    acc = StreamingTopK(np.eye(3, dtype=np.float32), ["text"], 2)
    with pytest.raises(ValueError, match="unknown modality"):
        acc.add("image", np.eye(3))
    with pytest.raises(ValueError, match="3"):
        acc.add("text", np.ones((2, 4)))
    with pytest.raises(ValueError, match="distinct"):
        StreamingTopK(np.eye(3), ["text", "text"], 1)
    with pytest.raises(ValueError, match="at least"):
        StreamPlan.for_budget(10, 512, 50, 2, MIN_MEMORY_BUDGET - 1)
    acc.add("text", np.eye(3)[:2], ids=["a", "b"])
    acc.add("text", np.eye(3)[2:], ids=["c"])
    assert acc.ids_of("text")[:, 0].tolist() == ["a", "b", "c"]


# ------------------------------------------------------------------------- stores without Chroma
class ArrayStore:
    """A read-only store over arrays (or chunks made on demand): what streaming needs of a store."""

    def __init__(self, data, dim, lazy=None):
        self.data, self._dim, self.lazy, self.batches = data, dim, lazy, []

    @property
    def dim(self):
        return self._dim

    def modalities(self):
        return list(self.data)

    def counts(self):
        return {m: (v if isinstance(v, int) else v.shape[0]) for m, v in self.data.items()}

    def iter_embeddings(self, modality, batch_size=4096):
        self.batches.append(batch_size)
        n = self.counts()[modality]
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            emb = self.lazy(modality, s, e) if self.lazy else self.data[modality][s:e]
            yield [f"{modality}-{i}" for i in range(s, e)], emb

    def sample_documents(self, modality, n, seed=0):
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(self.counts()[modality], n, replace=False))
        emb = self.data[modality][rows]
        return [f"{modality}-{i}" for i in rows], [None] * len(rows), emb


def in_memory_lists(store, qs, k):
    """What calibration did before streaming: the whole corpus in memory, then topk_per_modality."""
    corpus = load_corpus(store)
    exclude = None if qs.self_ids is None else corpus.rows_of(qs.self_ids)
    found = topk_per_modality(qs.embeddings, corpus.vectors, corpus.labels, k, exclude=exclude)
    means = {
        str(m): corpus.vectors[corpus.labels == m].mean(axis=0, dtype=np.float64)
        for m in np.unique(corpus.labels)
    }
    return {m: found.of(m)[1].astype(np.float64) for m in found.modalities}, means


@pytest.mark.parametrize("budget", [MIN_MEMORY_BUDGET, 64 * MiB])
def test_mine_store_exact_equals_in_memory_mining(budget):
    rng = np.random.default_rng(3)
    store = ArrayStore(
        {
            "text": unit(rng.standard_normal((3000, 48))),
            "image": unit(rng.standard_normal((2000, 48))),
        },
        48,
    )
    counts = store.counts()
    sets = sample_query_sets(store, counts, 900, seed=1)
    sets["given"] = QuerySet(rng.standard_normal((300, 48)).astype(np.float32))
    got: dict[str, list] = {}
    means = mine_store_exact(
        store,
        sets,
        BACKGROUND_RANKS,
        lambda qm, lists: got.setdefault(qm, []).append(lists),
        counts=counts,
        memory_budget=budget,
    )
    if budget == MIN_MEMORY_BUDGET:  # several passes over the store, small chunks
        assert max(len(v) for v in got.values()) > 1 and max(store.batches) < 1000
    for qm, qs in sets.items():
        want, want_means = in_memory_lists(store, qs, BACKGROUND_RANKS)
        for m in want:
            # Scores to float32 rounding: another block shape may round a dot product 1 ulp apart.
            got_m = np.concatenate([g[m] for g in got[qm]])
            np.testing.assert_allclose(got_m, want[m], rtol=0, atol=1e-6)
    assert list(means) == sorted(want_means)
    for m in want_means:
        np.testing.assert_allclose(means[m], want_means[m], rtol=0, atol=1e-12)


def test_streamed_memory_stays_within_a_tiny_budget():
    # In memory the corpus would take 20 MiB and its scores against the queries 38 MiB: 2.5 and
    # 4.8 times the bound checked. Kept small: tracemalloc slows the many chunks of a tiny budget.
    dim, n = 128, 40_000

    def make(m, s, e):
        rng = np.random.default_rng([len(m), s])
        return unit(rng.standard_normal((e - s, dim)))

    store = ArrayStore({"text": n // 2, "image": n // 2}, dim, lazy=make)
    rng = np.random.default_rng(0)
    sets = {"text": QuerySet(unit(rng.standard_normal((400, dim))))}
    counts = store.counts()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        means = mine_store_exact(
            store, sets, BACKGROUND_RANKS, lambda qm, lists: None,
            counts=counts, memory_budget=MIN_MEMORY_BUDGET,
        )  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert set(means) == {"text", "image"}
    assert len(store.batches) == 4  # two passes: 400 queries x 2 x 50 do not fit one block
    assert max(store.batches) * dim * 4 < MIN_MEMORY_BUDGET // 4
    assert peak < 2 * MIN_MEMORY_BUDGET, f"peak {peak / MiB:.1f} MiB"


def test_resolve_mining():
    assert resolve_mining("exact", None, 10**9) == "exact"
    assert resolve_mining("store-index", None, 1) == "store-index"
    with pytest.raises(ValueError, match="mining must be one of"):
        resolve_mining("hnsw", None, 1)
    with pytest.warns(FutureWarning, match="deprecated"):
        assert resolve_mining("exact", 100, 101) == "store-index"
    with pytest.warns(FutureWarning):
        assert resolve_mining("exact", 100, 100) == "exact"
    store = ArrayStore({"text": np.eye(4, dtype=np.float32)}, 4)
    sets = {"text": QuerySet(np.eye(4, dtype=np.float32))}
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="agreement_sample"):
            fit_calibration(
                store, sets, counts={"text": 4}, model_id=None, dim=4, mining="store-index",
                agreement_sample=bad,
            )  # fmt: skip


# ------------------------------------------------------------------------------- real Chroma
@pytest.fixture
def persistent_engine(tmp_path):
    import chromadb

    from mmgap_core.engine import RetrievalEngine
    from mmgap_core.store.chroma import ChromaStore

    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    store = ChromaStore(client, "streamed", modalities=["text", "image"])
    rng = np.random.default_rng(7)
    d = 32
    for m, n, shift in (("text", 2500, 0), ("image", 1800, 1)):
        g = np.zeros(d)
        g[shift] = 1.5
        vecs = unit(rng.standard_normal((n, d)) / np.sqrt(d) + g)
        store.add(m, [f"{m}-{i}" for i in range(n)], vecs, model_id="test:synthetic")
    yield RetrievalEngine(store)
    client.close()


def old_in_memory_record(engine, sample=200, seed=0):
    """The statistics the in-memory exact path fitted before streaming (same queries)."""
    store = engine.store
    counts = store.counts()
    k = max(1, min(BACKGROUND_RANKS, max(counts.values())))
    std = ModalityStandardizer(model_id=engine.model_id, dim=engine.dim)
    bg = BackgroundScale(model_id=engine.model_id, dim=engine.dim)
    for qm, qs in sample_query_sets(store, counts, sample, seed=seed).items():
        lists, means = in_memory_lists(store, qs, k)
        best = {m: v[:, 0][np.isfinite(v[:, 0])] for m, v in lists.items()}
        std.partial_fit(
            np.concatenate(list(best.values())),
            np.concatenate([np.full(v.size, m) for m, v in best.items()]),
            qm,
        )
        bg.partial_fit(lists, qm, {m: max(counts[m], k) for m in lists})
    return std, bg, means


def test_engine_calibrate_on_persistent_chroma_matches_in_memory_path(persistent_engine):
    engine = persistent_engine
    std = engine.calibrate(sample=200, progress=False)
    record = engine.calibration
    want_std, want_bg, want_means = old_in_memory_record(engine)
    assert std.to_dict() == want_std.to_dict()
    assert record.background.to_dict() == want_bg.to_dict()
    for m in want_means:
        np.testing.assert_allclose(record.center_means[m], want_means[m], rtol=0, atol=1e-12)
    assert record.provenance.mining == "exact" and record.provenance.mining_agreement is None
    # Small chunks through the real store's batching: the same lists again.
    counts = engine.store.counts()
    sets = sample_query_sets(engine.store, counts, 200, seed=0)
    small = fit_calibration(
        engine.store, sets, counts=counts, model_id=engine.model_id, dim=engine.dim,
        memory_budget=MIN_MEMORY_BUDGET,
    )  # fmt: skip
    for key in want_std.keys_:  # several query blocks: merged running moments, float32 scores
        assert small.standardizer.mean_[key] == pytest.approx(want_std.mean_[key], abs=1e-6)
        assert small.standardizer.std_[key] == pytest.approx(want_std.std_[key], abs=1e-6)


def test_store_index_path_reports_its_agreement(persistent_engine):
    engine = persistent_engine
    exact = engine.calibrate(sample=200, progress=False)
    approx = engine.calibrate(sample=200, mining="store-index", progress=False)
    data = engine.calibration_data()
    assert data["mining"] == "store nearest-neighbour"
    agreement = data["mining_agreement"]
    assert agreement["queries"] == {"text": 100, "image": 100}
    assert set(agreement["top1"]) == {"text->text", "text->image", "image->text", "image->image"}
    assert all(0 <= v <= 1 for v in agreement["top1"].values())
    assert all(v >= -1e-5 for v in agreement["score_shortfall"].values())
    # Exact means come with the agreement pass; the statistics are close at this size.
    np.testing.assert_allclose(
        engine.calibration.center_means["text"], load_means(engine)["text"], atol=1e-12
    )
    for key in exact.keys_:
        assert approx.mean_[key] == pytest.approx(exact.mean_[key], abs=0.02)
    again = CalibrationRecord.from_dict(data)
    assert again.provenance.mining_agreement == agreement
    with pytest.warns(FutureWarning, match="exact_max_items"):
        engine.calibrate(sample=50, exact_max_items=0, progress=False)
    assert engine.calibration_data()["mining"] == "store nearest-neighbour"


def load_means(engine):
    corpus = load_corpus(engine.store)
    return {
        m: corpus.vectors[corpus.labels == m].mean(axis=0, dtype=np.float64)
        for m in np.unique(corpus.labels)
    }


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("yes", "mining_agreement must be null or an object"),
        ({"top1": {"text->image": 1.5}}, "between 0 and 1"),
        ({"top1": {"text->image": "high"}}, "finite number"),
        ({"top1": []}, "mining_agreement.top1 must be an object"),
        ({"queries": {"text": -1}}, "mining_agreement.queries"),
        ({"score_shortfall": {"": 0.1}}, "non-empty string"),
        ({"other": 1}, "unknown field 'other'"),
    ],
)
def test_mining_agreement_schema(value, words):
    std = ModalityStandardizer(model_id="m", dim=4)
    std.partial_fit(np.asarray([0.3, 0.35, 0.4]), "image", "text")
    data = CalibrationRecord(std, {"image": 10}, provenance=Provenance("m", 4)).to_dict()
    assert data["mining_agreement"] is None
    data["mining_agreement"] = value
    with pytest.raises(CalibrationFormatError, match=words):
        CalibrationRecord.from_dict(data)
    data["mining_agreement"] = None
    assert CalibrationRecord.from_dict(data).provenance.mining_agreement is None
