"""The single-query shortcut of ``two-view-z``: ``row_centered_cosines``,
``CenteredBackgroundScale.transform_row`` and ``TwoViewZFusion.fuse_one`` give what the batch path
gives, bit for bit, and leave everything unusual to it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmgap_core.background import BackgroundScale
from mmgap_core.candidates import CandidateBatch, ModalityCandidates, full_ids
from mmgap_core.centered_background import CenteredBackgroundScale
from mmgap_core.post_processing import (
    PostProcessing,
    batch_centered_cosines,
    post_processings,
    row_centered_cosines,
    top_directions,
)
from mmgap_core.fusion import make_method
from mmgap_core.stats import ModalityStandardizer

from _fixtures_fusion import MODS, SIZES, bits, sorted_lists

DIM = 24


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def world(seed):
    """Modality means and top directions of two offset clouds, as a calibration fits them."""
    rng = np.random.default_rng(seed)
    out = {}
    for j, m in enumerate(MODS):
        shift = np.zeros(DIM)
        shift[j] = 2.0
        x = unit(rng.standard_normal((300, DIM)) + shift)
        mean = x.mean(0)
        out[m] = (mean, top_directions(x, mean, 3))
    return {m: v[0] for m, v in out.items()}, {m: v[1] for m, v in out.items()}


def one_query(rng, lengths, qmod="text"):
    """A query, its raw best-first lists (Python floats) and the candidates' float32 embeddings."""
    q = unit(rng.standard_normal(DIM) + np.eye(DIM)[0])
    raw, embs = {}, {}
    for j, (m, k) in enumerate(lengths.items()):
        e = unit(rng.standard_normal((k, DIM)) + 1.5 * np.eye(DIM)[j]).astype(np.float32)
        s = e.astype(np.float64) @ q
        order = np.argsort(-s, kind="stable")
        raw[m], embs[m] = s[order].tolist(), e[order]
    return q, raw, embs


def batch_of(q, raw, embs, qmod="text"):
    lists = {m: ModalityCandidates(full_ids(1, len(r)), np.array([r])) for m, r in raw.items()}
    return CandidateBatch(
        qmod,
        lists,
        query_embeddings=q[None, :],
        candidate_embeddings=lambda m, ids: embs[m][None, : ids.shape[1]],
    )


@pytest.fixture(scope="module")
def method():
    """``two-view-z`` fitted for text queries on lists of up to 60 per modality."""
    rng = np.random.default_rng(11)
    means, dirs = world(3)
    lists = {m: sorted_lists(rng, 40, 60, 0.1 * j) for j, m in enumerate(MODS)}
    pools = {m: lists[m] + rng.normal(0.0, 0.02, lists[m].shape) for m in MODS}
    std = ModalityStandardizer().fit(
        np.r_[lists["text"][:, 0], lists["image"][:, 0]], ["text"] * 40 + ["image"] * 40, "text"
    )
    return make_method(
        "two-view-z",
        standardizer=std,
        background_scale=BackgroundScale().fit(lists, "text", SIZES),
        centered_scale=CenteredBackgroundScale().fit(pools, "text", SIZES),
        center_means=means,
        center_directions=dirs,
        corpus_sizes=SIZES,
    )


# ---------------------------------------------------------------- the post-processed cosines
@pytest.mark.parametrize("with_directions", [True, False])
def test_row_centred_cosines_are_the_batch_ones_bit_for_bit(with_directions):
    means, dirs = world(1)
    dirs = dirs if with_directions else {}
    q, raw, embs = one_query(np.random.default_rng(2), {"text": 9, "image": 14})
    got = row_centered_cosines(q, "text", embs, post_processings(means, dirs))
    want = batch_centered_cosines(batch_of(q, raw, embs), means, "x", dirs)
    for m in MODS:
        assert all(type(v) is float for v in got[m])
        np.testing.assert_array_equal(bits(got[m]), bits(want[m][0]))


@pytest.mark.parametrize("case", ["no mean", "wide mean", "narrow candidates", "nan", "2-d query"])
def test_row_centred_cosines_leave_what_the_batch_path_refuses_to_it(case):
    means, dirs = world(1)
    q, raw, embs = one_query(np.random.default_rng(2), {"text": 9, "image": 14})
    if case == "no mean":
        means = {"text": means["text"]}
    elif case == "wide mean":
        means = dict(means, image=np.r_[means["image"], 0.0])
        dirs = {"text": dirs["text"]}
    elif case == "narrow candidates":
        embs["image"] = embs["image"][:, :-1]
    elif case == "nan":
        embs["image"] = embs["image"].copy()
        embs["image"][3, 0] = np.nan
    else:
        q = q[None, :]
    assert row_centered_cosines(q, "text", embs, post_processings(means, dirs)) is None


@pytest.mark.parametrize(
    ("mean", "directions", "words"),
    [
        (np.zeros((2, 3)), None, r"mean embedding: expected a vector \[d\], got shape \(2, 3\)"),
        (np.zeros(3), np.eye(4)[:2], r"directions: expected \[D, 3\] to match the mean"),
    ],
)
def test_a_post_processing_refuses_shapes_that_do_not_fit(mean, directions, words):
    with pytest.raises(ValueError, match=words):
        PostProcessing(mean, directions)


def test_a_post_processing_without_directions_only_centres():
    rng = np.random.default_rng(3)
    mean = rng.standard_normal(DIM) * 0.1
    q = unit(rng.standard_normal((2, DIM)))
    c = unit(rng.standard_normal((2, 5, DIM)))
    post = PostProcessing(mean, np.zeros((0, DIM)))
    got = post.cosines(post.unit_queries(q), c)
    qc, cc = unit(q - mean), unit(c - mean)
    np.testing.assert_allclose(got, np.einsum("qd,qkd->qk", qc, cc), atol=1e-12)


# ---------------------------------------------------------------- the second view's z
@pytest.mark.parametrize("k", [2, 6, 10, 12, 60, 90])
@pytest.mark.parametrize("n_items", [{}, {"text": 40, "image": 40}, {"text": 5000}])
def test_stacked_centred_z_is_transform_bit_for_bit(method, k, n_items):
    rng = np.random.default_rng(k)
    pools = {m: rng.normal(0.1, 0.05, (3, k)) for m in MODS}  # raw order: not sorted
    scale = method.centered_scale
    got = scale.transform_full(pools, "text", n_items)
    assert list(got) == list(MODS)
    for m in MODS:
        want = scale.transform(pools[m], m, "text", n_items=n_items.get(m))
        np.testing.assert_array_equal(bits(got[m]), bits(want))


@pytest.mark.parametrize(
    "case", ["one column", "padding", "nan", "unfitted key", "numpy size", "zero size", "shapes"]
)
def test_stacked_centred_z_leaves_anything_unusual_to_transform(method, case):
    rng = np.random.default_rng(1)
    pools = {m: rng.normal(0.1, 0.05, (2, 8)) for m in MODS}
    sizes, qm = {}, "text"
    if case == "one column":
        pools = {m: v[:, :1] for m, v in pools.items()}
    elif case in ("padding", "nan"):
        pools["image"][1, -1] = -np.inf if case == "padding" else np.nan
    elif case == "unfitted key":
        qm = "image"
    elif case == "numpy size":
        sizes = {"image": np.int64(800)}
    elif case == "zero size":
        sizes = {"image": 0}
    else:
        pools["image"] = pools["image"][:, :7]
    assert method.centered_scale.transform_full(pools, qm, sizes) is None


# ---------------------------------------------------------------- the fusion
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "lengths",
    [{"text": 10, "image": 10}, {"text": 6, "image": 6}, {"text": 50, "image": 50}, {"image": 30}],
)
def test_fuse_one_is_fuse_bit_for_bit(method, seed, lengths):
    q, raw, embs = one_query(np.random.default_rng(seed), lengths)
    k = 8
    ranked = method.fuse_one(raw, "text", k, query=q, embeddings=embs)
    fused = method.fuse(batch_of(q, raw, embs), k)
    assert [p for p, _, _ in ranked] == fused.ids[0].tolist()
    assert [c for _, _, c in ranked] == fused.modality_codes[0].tolist()
    np.testing.assert_array_equal(bits([s for _, s, _ in ranked]), bits(fused.scores[0]))


@pytest.mark.parametrize(
    "case",
    [
        "no embeddings",
        "no query",
        "short list",
        "padding",
        "too many",
        "missing modality",
        "unequal widths",
        "narrow embeddings",
    ],
)
def test_fuse_one_leaves_anything_unusual_to_fuse(method, case):
    q, raw, embs = one_query(np.random.default_rng(4), {"text": 10, "image": 10})
    kw = dict(query=q, embeddings=embs)
    if case == "no embeddings":
        kw["embeddings"] = None
    elif case == "no query":
        kw["query"] = None
    elif case == "short list":
        q, raw, embs = one_query(np.random.default_rng(4), {"text": 10, "image": 5})
        kw = dict(query=q, embeddings=embs)
    elif case == "padding":
        raw["image"][-1] = -math.inf
    elif case == "too many":
        q, raw, embs = one_query(np.random.default_rng(4), {"text": 101, "image": 100})
        kw = dict(query=q, embeddings=embs)
    elif case == "missing modality":
        kw["embeddings"] = {"text": embs["text"]}
    elif case == "unequal widths":
        q, raw, embs = one_query(np.random.default_rng(4), {"text": 10, "image": 8})
        kw = dict(query=q, embeddings=embs)
    else:
        kw["embeddings"] = dict(embs, image=embs["image"][:, :-1])
    assert method.fuse_one(raw, "text", 5, **kw) is None


def test_fuse_one_leaves_a_modality_without_a_second_view_scale_to_fuse(method):
    # the text pools were too short to fit a scale (a modality of a few items at calibration)
    rng = np.random.default_rng(5)
    pools = {"image": rng.normal(0.1, 0.05, (20, 30)), "text": rng.normal(0.1, 0.05, (20, 2))}
    partial = make_method(
        "two-view-z",
        standardizer=method.raw.standardizer,
        background_scale=method.raw.scale,
        centered_scale=CenteredBackgroundScale().fit(pools, "text", SIZES),
        center_means=method.means,
        center_directions=method.directions,
        corpus_sizes=SIZES,
    )
    q, raw, embs = one_query(np.random.default_rng(4), {"text": 10, "image": 10})
    assert partial.fuse_one(raw, "text", 5, query=q, embeddings=embs) is None
    assert method.fuse_one(raw, "text", 5, query=q, embeddings=embs) is not None


@pytest.mark.parametrize("seed", range(3))
def test_the_stacked_path_is_the_general_path_bit_for_bit(method, seed, monkeypatch):
    rng = np.random.default_rng(seed)
    q, raw, embs = one_query(rng, {"text": 12, "image": 12})
    batch = batch_of(q, raw, embs)
    stacked = method.score(batch)
    monkeypatch.setattr(method, "_stacked_scores", lambda *a: None)
    general = method.score(batch)
    for m in MODS:
        np.testing.assert_array_equal(bits(stacked[m]), bits(general[m]))


@pytest.mark.parametrize("n_rows", [1, 3])
def test_query_embeddings_of_the_wrong_count_are_refused_by_name(method, n_rows):
    rng = np.random.default_rng(6)
    qs = [one_query(rng, {"text": 8, "image": 8}) for _ in range(2)]
    lists = {
        m: ModalityCandidates(full_ids(2, 8), np.array([raw[m] for _, raw, _ in qs])) for m in MODS
    }
    embs = {m: np.stack([e[m] for _, _, e in qs]) for m in MODS}
    wrong = unit(rng.standard_normal((n_rows, DIM)))  # two queries in the batch
    batch = CandidateBatch(
        "text", lists, query_embeddings=wrong, candidate_embeddings=lambda m, ids: embs[m]
    )
    with pytest.raises(ValueError, match=r"query embeddings have shape .*expected \[2, dim\]"):
        method.score(batch)
