"""Fusion methods: merged rankings are sorted, padded, truncated, and match manual computations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmgap_core.fusion import (
    METHOD_NAMES,
    CandidateBatch,
    CenterFusion,
    FusedRanking,
    MinMaxFusion,
    ModalityCandidates,
    RawFusion,
    RRFFusion,
    StandardizeFusion,
    ZScorePerQueryFusion,
    make_method,
    merge_scored,
    parse_methods,
)
from mmgap_core.background import BackgroundScale
from mmgap_core.centered_background import CenteredBackgroundScale
from mmgap_core.fusion import tie_break_keys
from mmgap_core.stats import ModalityStandardizer

MODS = ["text", "image", "audio"]
DIM = 6
ID_STRIDE = 1000  # modality j's ids are j * 1000 + position, so an id tells its modality
GAP = {"text": 0.30, "image": 0.20, "audio": 0.10}  # per-modality score offset: a modality gap


def embedding_table(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((len(MODS) * ID_STRIDE, DIM)) + 0.5


EMB = embedding_table()


def lookup(modality: str, ids: np.ndarray) -> np.ndarray:
    """[Q, k, d] embeddings of candidate ids; padding ids (-1) get an arbitrary row."""
    return EMB[np.where(ids >= 0, ids, 0)]


def make_batch(seed, n_q, widths, *, pad_value=-np.inf, query_modality="text"):
    """Each modality's lists sorted best first; each row keeps a random number of valid items."""
    rng = np.random.default_rng(seed)
    lists = {}
    for j, (m, width) in enumerate(zip(MODS, widths)):
        scores = -np.sort(-rng.uniform(-0.05, 0.05, size=(n_q, width)), axis=1) + GAP[m]
        ids = np.broadcast_to(j * ID_STRIDE + np.arange(width), (n_q, width)).copy()
        n_valid = rng.integers(0, width + 1, size=(n_q, 1))
        pad = np.arange(width)[None, :] >= n_valid
        ids[pad] = -1
        scores[pad] = pad_value
        lists[m] = ModalityCandidates(ids, scores)
    return CandidateBatch(
        query_modality,
        lists,
        query_embeddings=rng.standard_normal((n_q, DIM)),
        candidate_embeddings=lookup,
    )


def standardizer(seed=1, query_modality="text"):
    rng = np.random.default_rng(seed)
    scores, cands = [], []
    for m in MODS:
        scores += list(rng.normal(GAP[m] + 0.04, 0.02, size=20))
        cands += [m] * 20
    return ModalityStandardizer().fit(scores, cands, query_modality)


def background_scale(seed=3, query_modality="text"):
    rng = np.random.default_rng(seed)
    lists = {m: -np.sort(-rng.normal(GAP[m], 0.02, size=(30, 400)), axis=1)[:, :40] for m in MODS}
    return BackgroundScale().fit(lists, query_modality, {m: 400 for m in MODS})


def centered_scale(seed=4, query_modality="text"):
    rng = np.random.default_rng(seed)
    pools = {m: rng.normal(0.0, 0.1, size=(30, 40)) for m in MODS}  # raw order: unsorted
    return CenteredBackgroundScale().fit(pools, query_modality, {m: 400 for m in MODS})


STD = standardizer()
GOLD = standardizer(seed=2)
BG = background_scale()
CS = centered_scale()
MEANS = {m: EMB[j * ID_STRIDE : (j + 1) * ID_STRIDE].mean(axis=0) for j, m in enumerate(MODS)}


def all_methods():
    return {
        name: make_method(
            name,
            standardizer=STD,
            gold_standardizer=GOLD,
            center_means=MEANS,
            background_scale=BG,
            centered_scale=CS,
            rrf_k=60,
        )
        for name in METHOD_NAMES
    }


def check_ranking_shape(res: FusedRanking, batch: CandidateBatch, k):
    total = sum(c.ids.shape[1] for c in batch.lists.values())
    width = total if k is None else min(k, total)
    assert res.ids.shape == res.scores.shape == res.modality_codes.shape == (batch.n_queries, width)
    assert res.modalities == batch.modalities
    pad = res.ids < 0
    np.testing.assert_array_equal(pad, res.scores == -np.inf)
    np.testing.assert_array_equal(pad, res.modality_codes < 0)
    # Padding only at the tail, real items sorted best first.
    assert np.all(pad[:, :-1] <= pad[:, 1:])
    assert np.all(res.scores[:, :-1] >= res.scores[:, 1:])
    assert np.isfinite(res.scores[~pad]).all()
    for qi in range(batch.n_queries):
        got = res.ids[qi][~pad[qi]]
        assert len(set(got.tolist())) == got.size
        valid = np.concatenate([c.ids[qi][c.valid[qi]] for c in batch.lists.values()])
        assert set(got.tolist()) <= set(valid.tolist())
        assert got.size == min(width, valid.size)
    codes = res.modality_codes[~pad]
    np.testing.assert_array_equal(codes, res.ids[~pad] // ID_STRIDE)
    labels = res.modality_labels()
    assert np.all(labels[pad] == "")
    np.testing.assert_array_equal(labels[~pad], np.asarray(MODS)[codes])


# ---------------------------------------------------------------- every method


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_q=st.integers(1, 5),
    widths=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    k=st.one_of(st.none(), st.integers(1, 20)),
    pad_value=st.sampled_from([-np.inf, np.nan, 0.99, 0.0]),
)
def test_every_method_sorted_padded_and_truncated(seed, n_q, widths, k, pad_value):
    batch = make_batch(seed, n_q, widths, pad_value=pad_value)
    for name, method in all_methods().items():
        full = method.fuse(batch)
        check_ranking_shape(full, batch, None)
        res = method.fuse(batch, k)
        check_ranking_shape(res, batch, k)
        width = res.ids.shape[1]
        np.testing.assert_array_equal(res.ids, full.ids[:, :width])
        np.testing.assert_array_equal(res.scores, full.scores[:, :width])
        if name == "center":
            continue  # re-scores in embedding space: may reorder within a modality
        # Every other method is monotone within a list: a modality's items keep their list order.
        for qi in range(n_q):
            for j in range(len(widths)):
                mine = full.ids[qi][full.modality_codes[qi] == j]
                assert np.all(np.diff(mine) > 0), (name, qi, j)


def test_method_names_and_reprs():
    methods = all_methods()
    assert [m.name for m in methods.values()] == list(METHOD_NAMES)
    assert "RRFFusion(name='rrf')" == repr(methods["rrf"])


# ---------------------------------------------------------------- per method, against manual values


def flat_items(batch):
    """Per query: list of (modality, position, id, raw score) for valid items, in modality order."""
    out = []
    for qi in range(batch.n_queries):
        row = []
        for m, c in batch.lists.items():
            for p in range(c.ids.shape[1]):
                if c.ids[qi, p] >= 0:
                    row.append((m, p, int(c.ids[qi, p]), float(c.scores[qi, p])))
        out.append(row)
    return out


def coins(batch):
    """[Q, M] tie priorities of the batch's queries, from their raw scores (merge_scored's rule)."""
    raw = np.concatenate(
        [np.where(c.valid, c.scores, -np.inf) for c in batch.lists.values()], axis=1
    )
    return tie_break_keys(raw, batch.modalities)


def expected_ranking(batch, value):
    """ids and scores sorted by value(m, p, score) descending; ties go to the better list rank,
    then to the modality the query's coin favours."""
    rows = []
    prio = coins(batch)
    for qi, items in enumerate(flat_items(batch)):
        scored = [
            (value(m, p, s), i, p, prio[qi, batch.modalities.index(m)]) for m, p, i, s in items
        ]
        order = sorted(
            range(len(scored)), key=lambda t: (-scored[t][0], scored[t][2], scored[t][3])
        )
        rows.append([(scored[t][1], scored[t][0]) for t in order])
    return rows


def assert_ranking(res, rows):
    for qi, row in enumerate(rows):
        n = len(row)
        np.testing.assert_array_equal(res.ids[qi, :n], [i for i, _ in row])
        np.testing.assert_allclose(res.scores[qi, :n], [v for _, v in row], rtol=1e-12, atol=1e-12)
        assert np.all(res.ids[qi, n:] == -1) and np.all(res.scores[qi, n:] == -np.inf)


BATCH = make_batch(11, 6, [5, 4, 3], pad_value=np.nan)


def test_raw_is_cosine_order():
    res = RawFusion().fuse(BATCH)
    assert_ranking(res, expected_ranking(BATCH, lambda m, p, s: s))
    # With a modality gap (disjoint score ranges), raw ranks all text, then all image, then audio.
    for row in res.modality_codes:
        row = row[row >= 0]
        assert np.all(np.diff(row) >= 0)


def test_standardize_equals_manual_z():
    res = make_method("standardize", standardizer=STD).fuse(BATCH)
    assert_ranking(
        res,
        expected_ranking(
            BATCH, lambda m, p, s: (s - STD.mean_[("text", m)]) / STD.std_[("text", m)]
        ),
    )
    gold = make_method("standardize-gold", gold_standardizer=GOLD)
    assert gold.name == "standardize-gold" and gold.standardizer is GOLD
    res = gold.fuse(BATCH)
    assert_ranking(
        res,
        expected_ranking(
            BATCH, lambda m, p, s: (s - GOLD.mean_[("text", m)]) / GOLD.std_[("text", m)]
        ),
    )


def test_standardize_closes_the_modality_gap():
    # Text cosines sit 0.1 above image ones; raw puts all text first, standardize interleaves.
    std = ModalityStandardizer().fit(
        [0.30, 0.34, 0.20, 0.24], ["text", "text", "image", "image"], "text"
    )
    batch = CandidateBatch(
        "text",
        {
            "text": ModalityCandidates([[0, 1]], [[0.33, 0.31]]),
            "image": ModalityCandidates([[10, 11]], [[0.24, 0.22]]),
        },
    )
    np.testing.assert_array_equal(RawFusion().fuse(batch).ids, [[0, 1, 10, 11]])
    res = StandardizeFusion(std).fuse(batch)
    # text: mean 0.32, std 0.02; image: mean 0.22, std 0.02.
    np.testing.assert_array_equal(res.ids, [[10, 0, 11, 1]])
    np.testing.assert_allclose(res.scores, [[1.0, 0.5, 0.0, -0.5]], atol=1e-9)


def test_standardize_query_modality_must_be_fitted():
    batch = make_batch(3, 2, [2, 2], query_modality="image")
    with pytest.raises(ValueError, match="query modality 'image'"):
        make_method("standardize", standardizer=STD).fuse(batch)


def test_rrf_values_are_reciprocal_ranks():
    res = RRFFusion().fuse(BATCH)
    assert_ranking(res, expected_ranking(BATCH, lambda m, p, s: 1.0 / (60 + p + 1)))
    res = RRFFusion(k=0).fuse(BATCH)
    top = res.scores[:, 0]
    assert np.all(top[np.isfinite(top)] == 1.0)


def test_rrf_ranks_by_score_even_if_a_list_is_unsorted():
    batch = CandidateBatch("text", {"text": ModalityCandidates([[5, 6, 7]], [[0.1, 0.3, 0.2]])})
    res = RRFFusion().fuse(batch)
    np.testing.assert_array_equal(res.ids, [[6, 7, 5]])
    np.testing.assert_allclose(res.scores, [[1 / 61, 1 / 62, 1 / 63]])


def test_minmax_in_unit_interval_and_manual():
    res = MinMaxFusion().fuse(BATCH)
    valid = res.ids >= 0
    assert np.all((res.scores[valid] >= 0) & (res.scores[valid] <= 1))
    lo_hi = {}
    for qi, items in enumerate(flat_items(BATCH)):
        for m in MODS:
            s = [x[3] for x in items if x[0] == m]
            if s:
                lo_hi[qi, m] = (min(s), max(s))

    def value_for(qi):
        def value(m, p, s):
            lo, hi = lo_hi[qi, m]
            return (s - lo) / (hi - lo) if hi - lo > 1e-12 else 1.0

        return value

    for qi in range(BATCH.n_queries):
        one = CandidateBatch(
            "text",
            {m: ModalityCandidates(c.ids[[qi]], c.scores[[qi]]) for m, c in BATCH.lists.items()},
        )
        assert_ranking(MinMaxFusion().fuse(one), expected_ranking(one, value_for(qi)))
        np.testing.assert_array_equal(res.ids[qi], MinMaxFusion().fuse(one).ids[0])


def test_minmax_single_item_list_scores_one():
    batch = CandidateBatch("text", {"a": ModalityCandidates([[1, -1]], [[0.3, np.nan]])})
    res = MinMaxFusion().fuse(batch)
    np.testing.assert_array_equal(res.ids, [[1, -1]])
    np.testing.assert_array_equal(res.scores, [[1.0, -np.inf]])


def test_zscore_per_query_manual():
    res = ZScorePerQueryFusion().fuse(BATCH)
    for qi, items in enumerate(flat_items(BATCH)):
        want = {}
        for m in MODS:
            s = np.array([x[3] for x in items if x[0] == m])
            if s.size:
                sd = s.std() if s.std() > 1e-12 else 1.0
                for (_m, _p, i, _raw), z in zip(
                    [x for x in items if x[0] == m], (s - s.mean()) / sd
                ):
                    want[i] = z
        valid = res.ids[qi] >= 0
        got = dict(zip(res.ids[qi][valid].tolist(), res.scores[qi][valid].tolist()))
        assert got.keys() == want.keys()
        for i in want:
            assert got[i] == pytest.approx(want[i], abs=1e-9)


def test_zscore_per_query_constant_list_gets_std_one():
    batch = CandidateBatch("text", {"a": ModalityCandidates([[1, 2]], [[0.3, 0.3]])})
    res = ZScorePerQueryFusion().fuse(batch)
    np.testing.assert_allclose(res.scores, [[0.0, 0.0]], atol=1e-12)


def test_center_manual():
    res = make_method("center", center_means=MEANS).fuse(BATCH)
    q = BATCH.query_embeddings - MEANS["text"]
    q = q / np.linalg.norm(q, axis=1, keepdims=True)

    def value_for(qi):
        def value(m, p, s):
            c = EMB[BATCH.lists[m].ids[qi, p]] - MEANS[m]
            return float(q[qi] @ c / np.linalg.norm(c))

        return value

    for qi in range(BATCH.n_queries):
        want = expected_ranking(BATCH, value_for(qi))[qi]
        n = len(want)
        np.testing.assert_array_equal(res.ids[qi, :n], [i for i, _ in want])
        np.testing.assert_allclose(res.scores[qi, :n], [v for _, v in want], atol=1e-12)


def test_center_fit_means_and_errors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 4))
    labels = ["text"] * 4 + ["image"] * 6
    center = CenterFusion.fit(x, labels, extra={"audio": np.ones(4)})
    np.testing.assert_allclose(center.means["text"], x[:4].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(center.means["image"], x[4:].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(center.means["audio"], np.ones(4))
    with pytest.raises(ValueError, match="no modality means"):
        CenterFusion({})
    batch = make_batch(0, 2, [2, 2])
    with pytest.raises(ValueError, match="no mean embedding for modality 'image'"):
        CenterFusion({"text": np.zeros(DIM)}).fuse(batch)
    with pytest.raises(ValueError, match="mean of 'text' has shape"):
        CenterFusion({"text": np.zeros(4), "image": np.zeros(4)}).fuse(batch)
    no_emb = CandidateBatch("text", batch.lists)
    with pytest.raises(ValueError, match="center needs query embeddings"):
        make_method("center", center_means=MEANS).fuse(no_emb)
    wrong_q = CandidateBatch("text", batch.lists, np.zeros((3, DIM)), lookup)
    with pytest.raises(ValueError, match=r"query embeddings have shape \(3, 6\)"):
        make_method("center", center_means=MEANS).fuse(wrong_q)


# ---------------------------------------------------------------- construction errors


def test_make_method_errors():
    with pytest.raises(ValueError, match="standardize needs fitted pseudo-positive statistics"):
        make_method("standardize")
    with pytest.raises(ValueError, match="standardize-gold needs statistics fitted from labelled"):
        make_method("standardize-gold", standardizer=STD)
    with pytest.raises(ValueError, match="center needs per-modality mean embeddings"):
        make_method("center")
    with pytest.raises(ValueError, match="unknown fusion method 'borda'; choose from raw, "):
        make_method("borda")
    with pytest.raises(ValueError, match="not fitted"):
        make_method("standardize", standardizer=ModalityStandardizer())
    with pytest.raises(ValueError, match="rrf k must be >= 0"):
        make_method("rrf", rrf_k=-1)


def test_parse_methods():
    assert parse_methods(None) == list(METHOD_NAMES)
    assert parse_methods("all") == list(METHOD_NAMES)
    assert parse_methods(" ") == list(METHOD_NAMES)
    assert parse_methods("rrf, raw,rrf") == ["rrf", "raw"]
    with pytest.raises(ValueError, match="unknown fusion method 'zscore'"):
        parse_methods("raw,zscore")
    with pytest.raises(ValueError, match="no fusion method named"):
        parse_methods(" , ")


def test_candidate_batch_errors():
    with pytest.raises(ValueError, match=r"must both be \[Q, k\]"):
        ModalityCandidates([[1, 2]], [[0.1]])
    with pytest.raises(ValueError, match=r"must both be \[Q, k\]"):
        ModalityCandidates([1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="candidate scores contain NaN or inf"):
        ModalityCandidates([[1, 2]], [[0.1, np.nan]])
    with pytest.raises(ValueError, match="candidate scores contain NaN or inf"):
        ModalityCandidates([[1, 2]], [[np.inf, 0.1]])
    ModalityCandidates([[1, -1]], [[0.1, np.nan]])  # padding may hold anything
    with pytest.raises(ValueError, match="no candidate lists to fuse"):
        CandidateBatch("text", {})
    with pytest.raises(ValueError, match=r"disagree on the number of queries: \[1, 2\]"):
        CandidateBatch(
            "text",
            {
                "a": ModalityCandidates([[1]], [[0.1]]),
                "b": ModalityCandidates([[1], [2]], [[0.1], [0.2]]),
            },
        )


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3"])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        RawFusion().fuse(BATCH, k)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        merge_scored(BATCH, RawFusion().score(BATCH), k)


def test_ties_go_to_the_better_list_rank_then_a_coin():
    batch = CandidateBatch(
        "text",
        {
            "text": ModalityCandidates([[1, 2]], [[0.5, 0.5]]),
            "image": ModalityCandidates([[3, 4]], [[0.6, 0.5]]),
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = RawFusion().fuse(batch, 4)
    # 3 leads; 1 (text rank 1) beats 4 (image rank 2) and 2 (text rank 2) at 0.5; 4 vs 2 is a coin.
    assert res.ids[0, 0] == 3 and res.ids[0, 1] == 1
    assert set(res.ids[0, 2:]) == {2, 4}


@pytest.mark.parametrize("name", ["rrf", "minmax", "raw"])
def test_ties_favour_no_modality(name):
    rng = np.random.default_rng(0)
    firsts = []
    for _ in range(600):
        s = -np.sort(-rng.random(5))
        batch = CandidateBatch(
            "text",
            {
                "text": ModalityCandidates([range(5)], [s]),
                "image": ModalityCandidates([range(5)], [s]),
            },
        )
        firsts.append(make_method(name).fuse(batch, 1).modality_labels()[0, 0])
    share = np.mean(np.asarray(firsts) == "image")
    assert 0.42 < share < 0.58


def test_tie_coin_depends_on_the_query_not_its_batch():
    rng = np.random.default_rng(1)
    rows = -np.sort(-rng.random((8, 4)), axis=1)
    both = {m: ModalityCandidates(np.tile(np.arange(4), (8, 1)), rows) for m in ("text", "image")}
    together = RRFFusion().fuse(CandidateBatch("text", both), 8)
    for q in range(8):
        one = {m: ModalityCandidates(c.ids[[q]], c.scores[[q]]) for m, c in both.items()}
        alone = RRFFusion().fuse(CandidateBatch("text", one), 8)
        np.testing.assert_array_equal(alone.modality_codes[0], together.modality_codes[q])


# ---------------------------------------------------------------- what each method needs
def test_methods_declare_what_they_need():
    from mmgap_core.fusion import METHODS, method_class

    assert tuple(METHODS) == METHOD_NAMES
    needs = {
        name: {
            flag
            for flag in (
                "needs_standardizer",
                "needs_gold_standardizer",
                "needs_center_means",
                "needs_candidate_embeddings",
                "needs_background_scale",
                "needs_centered_scale",
            )
            if getattr(method_class(name), flag)
        }
        for name in METHOD_NAMES
    }
    assert needs == {
        "raw": set(),
        "standardize": {"needs_standardizer"},
        "standardize-gold": {"needs_gold_standardizer"},
        "zscore-per-query": set(),
        "minmax": set(),
        "rrf": set(),
        "center": {"needs_center_means", "needs_candidate_embeddings"},
        "background-z": {"needs_background_scale", "needs_standardizer"},
        "two-view-z": {
            "needs_background_scale",
            "needs_centered_scale",
            "needs_standardizer",
            "needs_center_means",
            "needs_candidate_embeddings",
        },
    }
    built = all_methods()
    for name, method in built.items():
        assert type(method) is method_class(name) and method.name == name
    with pytest.raises(ValueError, match="unknown fusion method 'borda'"):
        method_class("borda")
    with pytest.raises(ValueError, match="unknown fusion method"):
        method_class(None)
