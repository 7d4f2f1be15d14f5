"""The search path's shortcuts (issue 8, speed guard): each gives what the general code gives, bit
for bit, and everything the general code rejects is still rejected, with the same message."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from mmgap_core._validation import as_embeddings
from mmgap_core.background import BackgroundScale
from mmgap_core.candidates import CandidateBatch, ModalityCandidates, full_ids
from mmgap_core.fusion_background import BackgroundZFusion
from mmgap_core.fusion_base import merge_scored
from mmgap_core.stats import ModalityStandardizer
from mmgap_core.store.base import ModalityHits
from mmgap_core.store.chroma_query import query_sources

from _fixtures_fusion import MODS, SIZES, bits, full_candidates, sorted_lists


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------- query validation
@pytest.mark.parametrize(
    "x",
    [
        np.zeros((2, 3), np.float32),  # taken as it is
        np.arange(3, dtype=np.float32),
        np.asfortranarray(np.ones((2, 3), np.float32)),
        np.ones((2, 6), np.float32)[:, ::2],
        np.ones((2, 3)),
        np.ones((2, 3), dtype=">f4"),
        [[1, 2, 3]],
    ],
)
def test_a_float32_query_is_taken_as_it_is_and_others_are_converted(x):
    out = as_embeddings(x, "q", dim=3, allow_1d=True)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.ndim == 2
    np.testing.assert_array_equal(out, np.atleast_2d(np.asarray(x, dtype=np.float32)))
    if type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous:
        assert np.shares_memory(out, x)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.array([0.0, np.nan, 1.0], np.float32), r"q: contains NaN or inf in row\(s\) 0"),
        (np.array([[0.0, 1.0, 2.0], [np.inf, 0, 0]], np.float32), r"in row\(s\) 1"),
        (np.array([["a", "b", "c"]]), "expected numbers, got dtype <U1"),
        (np.zeros((2, 2, 3), np.float32), "expected a vector"),
        (np.zeros((1, 4), np.float32), "dimension mismatch, expected 3 columns, got 4"),
        (np.zeros((0, 3), np.float32), "is empty"),
    ],
)
def test_a_float32_query_is_still_checked(x, match):
    with pytest.raises(ValueError, match=match):
        as_embeddings(x, "q", dim=3, allow_1d=True)


# ---------------------------------------------------------------- candidates
def test_full_rows_share_one_read_only_id_table():
    ids = full_ids(2, 5)
    assert ids is full_ids(2, 5) and not ids.flags.writeable
    np.testing.assert_array_equal(ids, np.tile(np.arange(5), (2, 1)))
    shared = ModalityCandidates(ids, np.zeros((2, 5)))
    assert shared.ids is ids and shared.ids_are_ranks and shared.is_full
    copied = ModalityCandidates(ids.copy(), np.zeros((2, 5)))
    assert not copied.ids_are_ranks and copied.is_full
    padded = ModalityCandidates([[0, -1]], [[0.1, np.nan]])
    assert not padded.ids_are_ranks and not padded.is_full
    assert full_ids(1000, 100) is not full_ids(1000, 100)  # large tables are not kept


def test_from_hits_gives_full_rows_the_shared_table_only():
    def hits(m, ids, scores):
        n = len(ids[0])
        return ModalityHits(m, ids, np.asarray(scores, np.float32), [[None] * n], [[None] * n],
                            [[{}] * n])  # fmt: skip

    batch = CandidateBatch.from_hits(
        {"text": hits("text", [["a", "b"]], [[0.5, 0.4]]),
         "image": hits("image", [["c"]], [[0.3, -np.inf]])},
        "text",
    )  # fmt: skip
    assert batch.lists["text"].ids_are_ranks and not batch.lists["image"].ids_are_ranks
    np.testing.assert_array_equal(batch.lists["image"].ids, [[0, -1]])
    assert batch.lists["text"].scores.dtype == np.float64


# ---------------------------------------------------------------- merge
@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("k", [None, 1, 4, 30])
def test_merging_rank_ids_equals_the_general_merge(seed, k):
    rng = np.random.default_rng(seed)
    n_q, widths = 3, (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
    scores = {m: np.round(rng.normal(0, 1, (n_q, w)), 1) for m, w in zip(MODS, widths)}  # ties
    ranks = {m: ModalityCandidates(full_ids(n_q, w), scores[m]) for m, w in zip(MODS, widths)}
    plain = {m: ModalityCandidates(c.ids.copy(), c.scores) for m, c in ranks.items()}
    fast = merge_scored(CandidateBatch("text", ranks), scores, k)
    slow = merge_scored(CandidateBatch("text", plain), scores, k)
    np.testing.assert_array_equal(fast.ids, slow.ids)
    np.testing.assert_array_equal(bits(fast.scores), bits(slow.scores))
    np.testing.assert_array_equal(fast.modality_codes, slow.modality_codes)


# ---------------------------------------------------------------- background z
@pytest.mark.parametrize("n_q", [1, 3])
@pytest.mark.parametrize("k", [6, 10, 11, 50])
@pytest.mark.parametrize("sizes", [SIZES, {"text": 20, "image": None}, {}])
def test_one_pass_background_z_is_transform_bit_for_bit(background_scale, n_q, k, sizes):
    rng = np.random.default_rng(k * 10 + n_q)
    lists = {m: sorted_lists(rng, n_q, k, 0.1 * j) for j, m in enumerate(MODS)}
    out = background_scale.transform_full(lists, "text", sizes)
    assert list(out) == list(MODS)
    for m in MODS:
        want = background_scale.transform(lists[m], m, "text", n_items=sizes.get(m))
        np.testing.assert_array_equal(bits(out[m]), bits(want))


def _case(name, rng):
    lists = {m: sorted_lists(rng, 2, 8, 0.1 * j) for j, m in enumerate(MODS)}
    sizes = dict(SIZES)
    if name == "widths":
        lists["image"] = lists["image"][:, :7]
    elif name in ("padding", "nan", "posinf"):
        lists["image"][1, -1] = {"padding": -np.inf, "nan": np.nan, "posinf": np.inf}[name]
    elif name == "unsorted":
        lists["image"][0, [0, 1]] = lists["image"][0, [1, 0]] - 0.01
    elif name == "numpy size":
        sizes["image"] = np.int64(800)
    elif name == "no rows":
        lists = {m: v[:0] for m, v in lists.items()}
    return lists, sizes


@pytest.mark.parametrize(
    "name", ["widths", "padding", "nan", "posinf", "unsorted", "numpy size", "no rows"]
)
def test_one_pass_background_z_leaves_anything_unusual_to_transform(background_scale, name):
    lists, sizes = _case(name, np.random.default_rng(1))
    assert background_scale.transform_full(lists, "text", sizes) is None


def test_one_pass_background_z_leaves_unfitted_keys_to_transform():
    rng = np.random.default_rng(2)
    short = {"text": sorted_lists(rng, 5, 10), "image": sorted_lists(rng, 5, 2)}  # no image slope
    bg = BackgroundScale().fit(short, "text", SIZES)
    lists = {m: sorted_lists(rng, 1, 8) for m in MODS}
    assert bg.transform_full(lists, "text", SIZES) is None
    with pytest.warns(UserWarning, match="pooled scale"):
        BackgroundZFusion(bg, SIZES).score(CandidateBatch("text", full_candidates(lists)))


def test_background_z_fusion_still_names_the_modality_of_a_bad_list(background_scale):
    rng = np.random.default_rng(4)
    lists = {m: sorted_lists(rng, 1, 8, 0.1 * j) for j, m in enumerate(MODS)}
    lists["image"][0, [0, 1]] = lists["image"][0, [1, 0]] - 0.01
    with pytest.raises(ValueError, match="image candidates: each row must be sorted best first"):
        BackgroundZFusion(background_scale, SIZES).score(
            CandidateBatch("text", full_candidates(lists))
        )
    with pytest.raises(ValueError, match="candidate scores contain NaN or inf"):
        ModalityCandidates(full_ids(1, 8), np.full((1, 8), np.nan))


@pytest.mark.parametrize("k", [3, 8])
def test_background_z_fusion_of_full_lists_is_the_per_key_z(background_scale, k):
    rng = np.random.default_rng(k)
    lists = {m: sorted_lists(rng, 4, k, 0.1 * j) for j, m in enumerate(MODS)}
    std = ModalityStandardizer().fit(rng.normal(0.3, 0.05, 20), ["text", "image"] * 10, "text")
    got = BackgroundZFusion(background_scale, SIZES, std).score(
        CandidateBatch("text", full_candidates(lists))
    )
    for m in MODS:
        if k >= 6:  # the one-pass path
            want = background_scale.transform(lists[m], m, "text", n_items=SIZES[m])
        else:  # short lists: the paper's z
            want = std.transform(lists[m], m, "text")
        np.testing.assert_array_equal(bits(got[m]), bits(want))


# ---------------------------------------------------------------- store and engine
@pytest.fixture
def vector_engine(tmp_path):
    import chromadb

    from mmgap_core.engine import RetrievalEngine
    from mmgap_core.store.chroma import ChromaStore

    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    store = ChromaStore(client, "fast", modalities=list(MODS))
    rng = np.random.default_rng(7)
    for j, (m, n) in enumerate((("text", 300), ("image", 200))):
        g = np.zeros(16)
        g[j] = 1.5
        vecs = unit(rng.standard_normal((n, 16)) / 4 + g)
        docs = [f"{m} {i}" for i in range(n)] if m == "text" else None
        store.add(m, [f"{m}-{i}" for i in range(n)], vecs, documents=docs, model_id="t:s")
    engine = RetrievalEngine(store)
    engine.calibrate(sample=60, progress=False)
    yield engine
    client.close()


def test_store_hits_are_what_query_sources_gives(vector_engine):
    store = vector_engine.store
    q = unit(np.random.default_rng(1).standard_normal((3, 16))).astype(np.float32)
    got = store.query_per_modality(q, {"text": 4, "image": 300}, include_embeddings=True)
    for m, k in (("text", 4), ("image", 300)):
        want = query_sources(m, store._sources(m), q, k, include_embeddings=True)
        h = got[m]
        assert (h.ids, h.documents, h.uris, h.metadatas) == (
            want.ids, want.documents, want.uris, want.metadatas
        )  # fmt: skip
        np.testing.assert_array_equal(h.scores, want.scores)
        np.testing.assert_array_equal(h.embeddings, want.embeddings)
        assert h.scores.dtype == np.float32 and h.row_lengths() == [min(k, 200)] * 3


def test_the_query_threads_leave_the_hits_to_the_caller(vector_engine, monkeypatch):
    import mmgap_core.store.chroma_reader as reader

    built = []
    real = reader.hits_from_rows
    monkeypatch.setattr(
        reader, "hits_from_rows", lambda *a: built.append(threading.current_thread()) or real(*a)
    )
    vector_engine.store.query_per_modality(np.ones(16), 2)
    assert built == [threading.main_thread()] * 2


@pytest.mark.parametrize(
    ("ks", "match"),
    [
        ({"text": True, "image": 2}, r"k_per_modality\['text'\] must be a positive integer"),
        ({"text": 2, "image": 2.0}, r"k_per_modality\['image'\] must be a positive integer"),
        ({"text": 2, "image": 0}, r"k_per_modality\['image'\]"),
        ({"text": 2}, r"k_per_modality has no k for modalities \['image'\]"),
        (0, "k_per_modality must be a positive integer"),
    ],
)
def test_store_k_checks_are_unchanged(vector_engine, ks, match):
    with pytest.raises(ValueError, match=match):
        vector_engine.store.query_per_modality(np.ones(16), ks, modalities=list(MODS))
    both = vector_engine.store.query_per_modality(np.ones(16), {"text": np.int64(2), "image": 3})
    assert [h.k for h in both.values()] == [2, 3]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.full(16, np.nan, np.float32), "contains NaN or inf"),
        (np.ones(15, np.float32), "dimension mismatch, expected 16 columns, got 15"),
        (np.ones((2, 16), np.float32), "expected one vector, got 2 rows"),
    ],
)
def test_engine_and_store_both_still_reject_a_bad_query(vector_engine, bad, match):
    with pytest.raises(ValueError, match="query embedding: " + match):
        vector_engine.search(embedding=bad, k=3)
    if "rows" not in match:
        with pytest.raises(ValueError, match="query embeddings: " + match):
            vector_engine.store.query_per_modality(bad, 3)


#: The method whose single-query shortcut is plain Python (the default before two-view-z).
BG = "background-z"


def test_search_reuses_its_fusion_method_until_what_it_was_built_from_changes(vector_engine):
    from mmgap_core.engine import RetrievalEngine

    engine = vector_engine
    q = unit(np.random.default_rng(5).standard_normal((1, 16)))[0]
    first = engine.search(embedding=q, k=5, method=BG)
    fuser = engine._methods.last
    assert engine.search(embedding=q, k=5, method=BG).hits == first.hits
    assert engine._methods.last is fuser  # reused
    engine.search(embedding=q, k=5, method="".join(["background", "-z"]))
    assert engine._methods.last is fuser  # an equal name built elsewhere: reused
    engine.search(embedding=q, k=5, method="raw")
    assert engine._methods.last is not fuser  # another method
    engine.search(embedding=q, k=5, method=BG)
    fuser = engine._methods.last
    engine.calibration.standardizer = ModalityStandardizer.from_dict(
        engine.calibration.standardizer.to_dict()
    )
    engine.search(embedding=q, k=5, method=BG)
    assert engine._methods.last is not fuser  # other statistics
    fuser = engine._methods.last
    engine.calibrate(sample=60, seed=1, progress=False)
    again = engine.search(embedding=q, k=5, method=BG)
    assert engine._methods.last is not fuser  # recalibrated
    fresh = RetrievalEngine(engine.store).search(embedding=q, k=5, method=BG)
    assert again.hits == fresh.hits


def test_search_results_are_what_the_general_path_gives(vector_engine):
    """The engine's answer equals the store's hits fused by hand, one key at a time."""
    from mmgap_core.results import SearchResult

    engine = vector_engine
    bg = engine.calibration.background
    counts = engine.store.counts()
    for q in unit(np.random.default_rng(6).standard_normal((20, 16))):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = engine.search(embedding=q, k=7, k_per_modality=12, method=BG)
        hits = engine.store.query_per_modality(q, {"text": 12, "image": 12})
        lists = {
            m: ModalityCandidates(np.tile(np.arange(12), (1, 1)), h.scores.astype(np.float64))
            for m, h in hits.items()
        }
        z = {m: bg.transform(c.scores, m, "text", n_items=counts[m]) for m, c in lists.items()}
        fused = merge_scored(CandidateBatch("text", lists), z, 7)
        want = SearchResult.from_ranking(fused, hits, "background-z", "text", [])
        assert [(h.id, h.modality, h.rank, h.text, h.metadata) for h in got] == [
            (h.id, h.modality, h.rank, h.text, h.metadata) for h in want
        ]
        np.testing.assert_array_equal(
            bits([h.score for h in got] + [h.raw_score for h in got]),
            bits([h.score for h in want] + [h.raw_score for h in want]),
        )


@pytest.mark.parametrize("method", [BG, "two-view-z"])
def test_a_search_takes_the_single_query_shortcut_and_falls_back_when_it_declines(
    vector_engine, monkeypatch, method
):
    from mmgap_core.fusion import method_class

    cls = method_class(method)
    engine = vector_engine
    q = unit(np.random.default_rng(8).standard_normal((1, 16)))[0]
    want = engine.search(embedding=q, k=6, k_per_modality=10, method=method)
    calls = {"one": 0, "batch": 0, "declined": 0}
    real_one, real_fuse = cls.fuse_one, cls.fuse

    def counted(name, real):
        def f(*a, **kw):
            calls[name] += 1
            out = real(*a, **kw)
            calls["declined"] += name == "one" and out is None
            return out

        return f

    monkeypatch.setattr(cls, "fuse_one", counted("one", real_one))
    monkeypatch.setattr(cls, "fuse", counted("batch", real_fuse))
    assert engine.search(embedding=q, k=6, k_per_modality=10, method=method).hits == want.hits
    assert calls == {"one": 1, "batch": 0, "declined": 0}
    # A declined shortcut (here: forced) gives the same answer through the batch path.
    monkeypatch.setattr(cls, "fuse_one", lambda *a, **kw: None)
    assert engine.search(embedding=q, k=6, k_per_modality=10, method=method).hits == want.hits
    assert calls["batch"] == 1
    # Padded lists (a filter leaves no text) are the batch path's.
    monkeypatch.setattr(cls, "fuse_one", counted("one", real_one))
    only_images = engine.search(
        embedding=q, k=6, k_per_modality=10, where={"modality": "image"}, method=method
    )
    assert calls == {"one": 2, "batch": 2, "declined": 1}
    assert [h.modality for h in only_images] == ["image"] * 6
