"""Blocked exact per-modality top-k search and pseudo-positive mining, checked by brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmgap_core.mining import (
    ModalityTopK,
    PseudoPositives,
    gold_pair_scores,
    mine_pseudo_positives,
    topk_per_modality,
)

MiB = 2**20
TOL = 2e-5  # float32 BLAS vs float64 reference, for unit-scale cosines


def brute_force_scores(q, c, exclude=None):
    """Full float64 cosine matrix, with each query's own row set to -inf."""
    q64, c64 = np.asarray(q, np.float64), np.asarray(c, np.float64)
    qn = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
    cn = c64 / np.linalg.norm(c64, axis=1, keepdims=True)
    s = qn @ cn.T
    if exclude is not None:
        own = np.flatnonzero(np.asarray(exclude) >= 0)
        s[own, np.asarray(exclude)[own]] = -np.inf
    return s


def assert_matches_brute_force(res: ModalityTopK, s: np.ndarray, labels, k: int, exclude=None):
    labels = np.asarray(labels)
    n_q = s.shape[0]
    assert res.indices.shape == res.scores.shape == (n_q, len(res.modalities), k)
    assert res.indices.dtype == np.int64 and res.scores.dtype == np.float32
    for m in res.modalities:
        cols = np.flatnonzero(labels == m)
        sm = s[:, cols]
        want = np.full((n_q, k), -np.inf)
        top = -np.sort(-sm, axis=1)[:, :k]
        want[:, : top.shape[1]] = top
        idx, got = res.of(m)
        valid = np.isfinite(want)
        # -1 / -inf exactly where brute force has nothing left (modality smaller than k, self only).
        np.testing.assert_array_equal(idx >= 0, valid)
        np.testing.assert_array_equal(np.isfinite(got), valid)
        np.testing.assert_allclose(got[valid], want[valid], atol=TOL, rtol=0)
        taken = np.where(valid, idx, 0)
        assert np.all(labels[taken[valid]] == m)
        srt = np.sort(np.where(valid, idx, -np.arange(1, k + 1)), axis=1)
        assert np.all(np.diff(srt, axis=1) != 0), "an item is returned twice"
        if exclude is not None:
            assert not np.any(valid & (idx == np.asarray(exclude)[:, None])), "self returned"
        # Ties may pick either item: the reference score at our index must be the reported one.
        at_idx = np.take_along_axis(s, taken, axis=1)
        np.testing.assert_allclose(at_idx[valid], got[valid], atol=TOL, rtol=0)
        assert np.all(got[:, :-1] >= got[:, 1:]), "not sorted best first"


def make_case(seed, n_q, n_c, d, n_mod, layout, unit, with_exclude):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n_q, d)).astype(np.float32)
    c = rng.standard_normal((n_c, d)).astype(np.float32)
    names = ["text", "image", "audio"][:n_mod]
    if layout == "contiguous":
        cuts = np.sort(rng.integers(0, n_c + 1, size=n_mod - 1))
        labels = np.array(names)[np.searchsorted(cuts, np.arange(n_c), side="right")]
    else:
        labels = np.array(names)[rng.integers(0, n_mod, size=n_c)]
    if unit:
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
    else:
        q *= rng.uniform(0.01, 100, size=(n_q, 1)).astype(np.float32)
        c *= rng.uniform(0.01, 100, size=(n_c, 1)).astype(np.float32)
    exclude = rng.integers(-1, n_c, size=n_q) if with_exclude else None
    if with_exclude and n_q <= n_c:
        # Calibration-style: the queries are corpus items themselves, so self-exclusion matters.
        exclude = rng.permutation(n_c)[:n_q]
        q = c[exclude] * np.float32(1.5)
    return q, c, labels, exclude


case_params = dict(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 5),
    n_mod=st.integers(1, 3),
    layout=st.sampled_from(["contiguous", "interleaved"]),
    unit=st.booleans(),
    with_exclude=st.booleans(),
)


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(n_q=st.integers(1, 700), n_c=st.integers(1, 1300), **case_params)
def test_blocked_equals_brute_force_many_blocks(
    n_q, n_c, seed, k, n_mod, layout, unit, with_exclude
):
    # d=256 with a 1 MiB budget gives 256-candidate and ~380-query blocks: many blocks each way.
    q, c, labels, exclude = make_case(seed, n_q, n_c, 256, n_mod, layout, unit, with_exclude)
    res = topk_per_modality(q, c, labels, k, exclude=exclude, max_block_bytes=MiB)
    assert_matches_brute_force(res, brute_force_scores(q, c, exclude), labels, k, exclude)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    n_q=st.integers(1, 30),
    n_c=st.integers(1, 40),
    d=st.integers(1, 16),
    **case_params,
)
def test_blocked_equals_brute_force_small(n_q, n_c, d, seed, k, n_mod, layout, unit, with_exclude):
    q, c, labels, exclude = make_case(seed, n_q, n_c, d, n_mod, layout, unit, with_exclude)
    res = topk_per_modality(q, c, labels, k, exclude=exclude, max_block_bytes=MiB)
    assert_matches_brute_force(res, brute_force_scores(q, c, exclude), labels, k, exclude)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("layout", ["contiguous", "interleaved"])
def test_large_blocks_and_default_budget(k, layout):
    q, c, labels, exclude = make_case(7, 600, 2000, 300, 2, layout, True, True)
    for budget in (MiB, 3 * MiB, None):
        kw = {} if budget is None else {"max_block_bytes": budget}
        res = topk_per_modality(q, c, labels, k, exclude=exclude, **kw)
        assert_matches_brute_force(res, brute_force_scores(q, c, exclude), labels, k, exclude)


@pytest.mark.parametrize("k", [1, 4])
def test_ties_go_to_the_lowest_row(k):
    # Integer-valued unit vectors: all dot products are exact, so ties are real ties.
    eye = np.eye(4, dtype=np.float32)
    c = np.stack([eye[1], eye[0], eye[0], eye[2], eye[0], eye[0], eye[0]])
    labels = ["text"] * 7
    res = topk_per_modality(eye[[0]], c, labels, k)
    want = [1, 2, 4, 5][:k]
    np.testing.assert_array_equal(res.indices[0, 0], want)
    np.testing.assert_array_equal(res.scores[0, 0], np.ones(k, np.float32))


def test_ties_across_blocks_keep_the_lowest_row():
    # 600 identical candidates: with d=256 and 1 MiB they span three candidate blocks.
    e = np.zeros((1, 256), np.float32)
    e[0, 0] = 1
    c = np.repeat(e, 600, axis=0)
    for k in (1, 5):
        res = topk_per_modality(e, c, ["image"] * 600, k, max_block_bytes=MiB)
        np.testing.assert_array_equal(res.indices[0, 0], np.arange(k))
        res = topk_per_modality(e, c, ["image"] * 600, k, exclude=[2], max_block_bytes=MiB)
        np.testing.assert_array_equal(res.indices[0, 0], [i for i in range(k + 1) if i != 2][:k])


@pytest.mark.parametrize("k", [2, 5])
def test_one_query_tied_with_hundreds_among_ordinary_queries(k):
    # The tied row has hundreds of hits per block while the others have ~k: the merge must stay
    # exact.
    rng = np.random.default_rng(12)
    d = 256
    e = np.zeros((1, d), np.float32)
    e[0, 0] = 1
    others = rng.standard_normal((500, d)).astype(np.float32)
    c = np.concatenate([others[:200], np.repeat(e, 300, axis=0), others[200:]])
    q = np.concatenate([rng.standard_normal((40, d)).astype(np.float32), e])
    labels = ["text"] * c.shape[0]
    res = topk_per_modality(q, c, labels, k, max_block_bytes=MiB)
    np.testing.assert_array_equal(res.indices[-1, 0], np.arange(200, 200 + k))
    assert_matches_brute_force(res, brute_force_scores(q, c), labels, k)


def test_an_item_is_never_its_own_pseudo_positive():
    rng = np.random.default_rng(3)
    c = rng.standard_normal((50, 8)).astype(np.float32)
    labels = np.array(["text", "image"] * 25)
    res = mine_pseudo_positives(c, c, labels, top_k=3, exclude=np.arange(50))
    for m in res.modalities:
        idx, _ = res.of(m)
        assert not np.any(idx == np.arange(50)[:, None])
    # Without exclusion each item's best same-modality match is itself, with cosine 1.
    res = mine_pseudo_positives(c, c, labels)
    idx, sc = res.of("text")
    np.testing.assert_array_equal(idx[::2, 0], np.arange(0, 50, 2))
    np.testing.assert_allclose(sc[::2, 0], 1.0, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_modality_holding_only_the_query_yields_minus_one(k):
    rng = np.random.default_rng(4)
    c = rng.standard_normal((6, 5)).astype(np.float32)
    labels = ["image"] + ["text"] * 5
    res = mine_pseudo_positives(c[[0, 1]], c, labels, top_k=k, exclude=[0, 1])
    idx, sc = res.of("image")
    np.testing.assert_array_equal(idx[0], [-1] * k)
    assert np.all(sc[0] == -np.inf)
    assert idx[1, 0] == 0 and np.isfinite(sc[1, 0])
    idx, sc = res.of("text")
    assert np.all(idx[0] >= 1) and np.all(np.isfinite(sc[0]))
    assert 1 not in idx[1] and np.all(idx[1] >= 2)
    scores, mods = res.pairs()
    assert np.isfinite(scores).all()
    assert scores.size == (res.indices >= 0).sum() == mods.size


def test_modality_smaller_than_k_is_padded():
    c = np.eye(3, dtype=np.float32)
    res = topk_per_modality(c[[0]], c, ["text", "image", "image"], 4)
    idx, sc = res.of("text")
    np.testing.assert_array_equal(idx[0], [0, -1, -1, -1])
    assert sc[0, 0] == 1 and np.all(sc[0, 1:] == -np.inf)
    idx, _ = res.of("image")
    np.testing.assert_array_equal(idx[0, :2], [1, 2])


def test_modalities_argument_selects_and_orders():
    rng = np.random.default_rng(5)
    c = rng.standard_normal((30, 4)).astype(np.float32)
    labels = np.array(["text", "image", "audio"] * 10)
    res = topk_per_modality(c[:3], c, labels, 2, modalities=["audio", "text"])
    assert res.modalities == ["audio", "text"]
    full = topk_per_modality(c[:3], c, labels, 2)
    assert full.modalities == ["text", "image", "audio"]
    np.testing.assert_array_equal(res.of("audio")[0], full.of("audio")[0])
    with pytest.raises(ValueError, match="unknown modality 'image'"):
        res.of("image")


def test_pseudo_positive_pairs_feed_the_standardizer():
    rng = np.random.default_rng(6)
    c = rng.standard_normal((40, 6)).astype(np.float32)
    labels = np.array(["text"] * 20 + ["image"] * 20)
    res = mine_pseudo_positives(c[:20], c, labels, top_k=2, exclude=np.arange(20))
    assert isinstance(res, PseudoPositives)
    scores, mods = res.pairs()
    assert scores.dtype == np.float64 and scores.shape == (80,)
    assert set(mods.tolist()) == {"text", "image"}
    np.testing.assert_allclose(np.sort(scores), np.sort(res.scores.ravel().astype(np.float64)))


def test_tiny_and_huge_rows_are_not_zero_norm():
    # Squared float32 norms of these rows underflow / overflow; cosines are still well defined.
    rng = np.random.default_rng(8)
    base = rng.standard_normal((10, 16)).astype(np.float32)
    c = base * np.array([1e-25] * 5 + [1e25] * 5, np.float32)[:, None]
    q = base[:3] * np.float32(1e-30)
    res = topk_per_modality(q, c, ["text"] * 10, 3)
    assert_matches_brute_force(res, brute_force_scores(base[:3], base), ["text"] * 10, 3)
    np.testing.assert_array_equal(res.indices[:, 0, 0], [0, 1, 2])


def test_float64_and_list_inputs_are_accepted():
    rng = np.random.default_rng(9)
    c = rng.standard_normal((12, 5))
    res = topk_per_modality(c[:2].tolist(), c, ["a", "b"] * 6, 2)
    assert_matches_brute_force(res, brute_force_scores(c[:2], c), ["a", "b"] * 6, 2)


def test_gold_pair_scores_equal_direct_cosines():
    rng = np.random.default_rng(10)
    q = rng.standard_normal((8, 7)) * 3
    c = rng.standard_normal((20, 7)) * 0.2
    labels = np.array(["text", "image"] * 10)
    pairs = np.array([[0, 3], [0, 4], [5, 19], [7, 0], [2, 2]])
    scores, mods = gold_pair_scores(q, c, labels, pairs)
    want = [q[i] @ c[j] / (np.linalg.norm(q[i]) * np.linalg.norm(c[j])) for i, j in pairs.tolist()]
    np.testing.assert_allclose(scores, want, atol=1e-6)
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(mods, labels[pairs[:, 1]])


def test_gold_pair_scores_ignore_unpaired_zero_rows():
    q = np.array([[1.0, 0.0], [0.0, 0.0]])
    c = np.array([[1.0, 1.0], [0.0, 0.0]])
    scores, _ = gold_pair_scores(q, c, ["text", "image"], [[0, 0]])
    np.testing.assert_allclose(scores, [np.sqrt(0.5)], atol=1e-7)


# ---------------------------------------------------------------- bad input: ValueError, never NaN

Q3 = np.eye(3, dtype=np.float32)
C4 = np.vstack([np.eye(3, dtype=np.float32), np.ones((1, 3), np.float32)])
L4 = ["text", "text", "image", "image"]


def with_value(a, row, col, value):
    a = a.copy()
    a[row, col] = value
    return a


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"queries": with_value(Q3, 1, 0, np.nan)}, r"queries: contains NaN or inf in row\(s\) 1"),
        ({"queries": with_value(Q3, 2, 2, np.inf)}, r"queries: contains NaN or inf in row\(s\) 2"),
        ({"candidates": with_value(C4, 3, 1, -np.inf)}, r"candidates: contains NaN or inf"),
        ({"candidates": with_value(C4, 0, 0, np.nan)}, r"candidates: contains NaN or inf"),
        ({"queries": np.ones((2, 4), np.float32)}, "queries: dimension mismatch"),
        ({"queries": np.ones(3, np.float32)}, "queries: expected a 2-D array"),
        ({"queries": np.zeros((0, 3), np.float32)}, "queries: is empty"),
        ({"candidates": np.zeros((0, 3), np.float32), "labels": []}, "candidates: is empty"),
        ({"queries": [[1, 0], [0, 1, 2]]}, "queries"),
        ({"queries": np.array([["a", "b", "c"]])}, "queries: expected numbers"),
        ({"queries": with_value(Q3, 1, 1, 0.0)}, r"queries: row\(s\) \[1\] have zero norm"),
        ({"candidates": with_value(C4, 2, 2, 0.0)}, r"candidates: row\(s\) \[2\] have zero norm"),
        ({"modalities": ["text", "audio"]}, "modality 'audio' has no candidates"),
        ({"modalities": "text"}, "modalities: expected a list"),
        ({"modalities": []}, "modalities: empty list"),
        ({"modalities": ["text", "text"]}, "modalities: duplicate"),
        ({"labels": L4[:3]}, "candidate_modalities: has 3 labels for 4 rows"),
        ({"labels": "text"}, "candidate_modalities: expected one label per row"),
        ({"labels": ["text", "", "image", "image"]}, "candidate_modalities: label 1"),
        ({"labels": np.array(["text", " ", "image", "image"])}, "candidate_modalities: label 1"),
        ({"labels": ["text", None, "image", "image"]}, "candidate_modalities: label 1"),
        ({"exclude": [0, 1]}, "exclude: expected 3 integer"),
        ({"exclude": [0.0, 1.0, 2.0]}, "exclude: expected 3 integer"),
        ({"exclude": [0, 1, 4]}, r"exclude: row numbers must be in \[-1, 3\]"),
        ({"exclude": [0, -2, 1]}, r"exclude: row numbers must be in \[-1, 3\]"),
        ({"k": 0}, "k must be a positive integer"),
        ({"k": -1}, "k must be a positive integer"),
        ({"k": 1.5}, "k must be a positive integer"),
        ({"k": True}, "k must be a positive integer"),
        ({"max_block_bytes": 1000}, "max_block_bytes must be at least 1 MiB"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    args = {"queries": Q3, "candidates": C4, "labels": L4, "k": 2}
    args.update(kwargs)
    extra = {key: args[key] for key in ("exclude", "modalities", "max_block_bytes") if key in args}
    with pytest.raises(ValueError, match=match):
        topk_per_modality(args["queries"], args["candidates"], args["labels"], args["k"], **extra)


def test_mine_rejects_bad_top_k():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        mine_pseudo_positives(Q3, C4, L4, top_k=0)


@pytest.mark.parametrize(
    "pairs, match",
    [
        ([[0, 1, 2]], r"pairs: expected an \[n, 2\] integer array"),
        ([[0.0, 1.0]], r"pairs: expected an \[n, 2\] integer array"),
        (np.zeros((0, 2), np.int64), "pairs: no labelled pairs"),
        ([[3, 0]], r"pairs: query row out of range \[0, 2\]"),
        ([[-1, 0]], "pairs: query row out of range"),
        ([[0, 4]], r"pairs: candidate row out of range \[0, 3\]"),
    ],
)
def test_gold_pair_scores_bad_pairs(pairs, match):
    with pytest.raises(ValueError, match=match):
        gold_pair_scores(Q3, C4, L4, pairs)


def test_gold_pair_scores_bad_rows():
    with pytest.raises(ValueError, match="queries: dimension mismatch"):
        gold_pair_scores(np.ones((2, 5)), C4, L4, [[0, 0]])
    with pytest.raises(ValueError, match="candidates: contains NaN"):
        gold_pair_scores(Q3, with_value(C4, 0, 0, np.nan), L4, [[0, 1]])
    with pytest.raises(ValueError, match="zero norm"):
        gold_pair_scores(Q3, with_value(C4, 0, 0, 0.0), L4, [[0, 0]])
