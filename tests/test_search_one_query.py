"""The single-query shortcut of a search (issue 8, speed guard): ``BackgroundScale.transform_row``,
``merge_row`` and ``BackgroundZFusion.fuse_one`` give what the numpy path gives, bit for bit, and
leave everything unusual to it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmgap_core.background import BackgroundScale
from mmgap_core.candidates import CandidateBatch
from mmgap_core.fusion_background import MIN_BACKGROUND_LIST, BackgroundZFusion
from mmgap_core.fusion_base import FusionMethod, merge_row, merge_scored, merge_stacked
from mmgap_core.results import SearchResult
from mmgap_core.store.base import ModalityHits

from _fixtures_fusion import MODS, SIZES, bits, full_candidates, sorted_lists


def sorted_row(rng, k, shift=0.0):
    return sorted_lists(rng, 1, k, shift)[0].tolist()


def as_batch(rows):
    return CandidateBatch("text", full_candidates({m: np.array([r]) for m, r in rows.items()}))


def assert_same_ranking(ranked, fused):
    """``merge_row``'s list against one row of a ``FusedRanking``: positions, scores, codes."""
    assert [p for p, _, _ in ranked] == fused.ids[0].tolist()
    assert [c for _, _, c in ranked] == fused.modality_codes[0].tolist()
    np.testing.assert_array_equal(bits([s for _, s, _ in ranked]), bits(fused.scores[0]))


# ---------------------------------------------------------------- background z of one row
@pytest.mark.parametrize("k", [2, 3, 6, 10, 11, 50])
@pytest.mark.parametrize("sizes", [SIZES, {"text": 20, "image": None}, {}])
def test_row_background_z_is_transform_full_bit_for_bit(background_scale, k, sizes):
    rng = np.random.default_rng(k)
    rows = {m: sorted_row(rng, k, 0.1 * j) for j, m in enumerate(MODS)}
    got = background_scale.transform_row(rows, "text", sizes)
    want = background_scale.transform_full(
        {m: np.array([r]) for m, r in rows.items()}, "text", sizes
    )
    assert list(got) == list(MODS)
    for m in MODS:
        assert all(type(v) is float for v in got[m])
        np.testing.assert_array_equal(bits(got[m]), bits(want[m][0]))


@pytest.mark.parametrize(
    "name", ["widths", "padding", "nan", "posinf", "unsorted", "numpy size", "one score", "empty"]
)
def test_row_background_z_leaves_anything_unusual_to_the_numpy_path(background_scale, name):
    rng = np.random.default_rng(1)
    rows = {m: sorted_row(rng, 8, 0.1 * j) for j, m in enumerate(MODS)}
    sizes = dict(SIZES)
    if name == "widths":
        rows["image"] = rows["image"][:7]
    elif name in ("padding", "nan", "posinf"):
        rows["image"][-1] = {"padding": -math.inf, "nan": math.nan, "posinf": math.inf}[name]
    elif name == "unsorted":
        rows["image"][:2] = [rows["image"][1] - 0.01, rows["image"][1]]
    elif name == "numpy size":
        sizes["image"] = np.int64(800)
    elif name == "one score":
        rows = {m: r[:1] for m, r in rows.items()}
    elif name == "empty":
        rows = {}
    assert background_scale.transform_row(rows, "text", sizes) is None


def test_row_background_z_leaves_unfitted_keys_to_the_numpy_path():
    rng = np.random.default_rng(2)
    short = {
        "text": np.array([sorted_row(rng, 10)] * 5),
        "image": np.array([sorted_row(rng, 2)] * 5),
    }
    bg = BackgroundScale().fit(short, "text", SIZES)  # no image slope: the pooled-scale warning
    rows = {m: sorted_row(rng, 8) for m in MODS}
    assert bg.transform_row(rows, "text", SIZES) is None
    assert BackgroundZFusion(bg, SIZES).fuse_one(rows, "text", 5) is None


# ---------------------------------------------------------------- merge of one row
@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("k", [1, 4, 30])
def test_row_merge_is_merge_scored_bit_for_bit(seed, k):
    rng = np.random.default_rng(seed)
    widths = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
    # Rounded scores tie often within a modality (kept) and sometimes across (left to the coin).
    rows = {m: np.round(rng.normal(0, 1, w), 1).tolist() for m, w in zip(MODS, widths)}
    ranked = merge_row(rows, k)
    values = [v for r in rows.values() for v in r]
    codes = [c for c, r in enumerate(rows.values()) for _ in r]
    across = any(
        values[i] == values[j] and codes[i] != codes[j]
        for i in range(len(values))
        for j in range(i)
    )
    if across:
        assert ranked is None
        return
    batch = as_batch(rows)
    assert_same_ranking(ranked, merge_scored(batch, {m: np.array([r]) for m, r in rows.items()}, k))


def test_row_merge_leaves_non_finite_scores_to_merge_scored():
    assert merge_row({"text": [1.0, math.nan], "image": [0.5]}, 3) is None
    assert merge_row({"text": [1.0, -math.inf], "image": [0.5]}, 3) is None


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("k", [1, 4, 30])
@pytest.mark.parametrize("n_lists", [1, 2, 3])
def test_stacked_merge_is_row_merge(seed, k, n_lists):
    rng = np.random.default_rng(seed)
    # Rounded scores tie often within a list and sometimes across lists.
    z = np.round(rng.normal(0, 1, (n_lists, int(rng.integers(1, 9)))), 1 if seed % 2 else 6)
    got = merge_stacked(z, k)
    want = merge_row({f"m{i}": row.tolist() for i, row in enumerate(z)}, k)
    assert got == want
    if want is not None:
        np.testing.assert_array_equal(bits([s for _, s, _ in got]), bits([s for _, s, _ in want]))


def test_stacked_merge_leaves_non_finite_scores_to_merge_scored():
    assert merge_stacked(np.array([[1.0, math.nan], [0.5, 0.2]]), 3) is None
    assert merge_stacked(np.array([[1.0, -math.inf], [0.5, 0.2]]), 3) is None


# ---------------------------------------------------------------- the fusion method
@st.composite
def score_rows(draw):
    k = draw(st.integers(1, 14))
    rows = {}
    for m in MODS:
        level = draw(st.sampled_from([0.1, 0.2, 0.25]))
        values = draw(st.lists(st.floats(-0.3, 0.3), min_size=k, max_size=k))
        # Coarse values: ties within and across modalities happen.
        rows[m] = sorted((round(level + v / 4, 3) for v in values), reverse=True)
    return rows, draw(st.integers(1, 2 * k + 1))


@settings(max_examples=200, deadline=None)
@given(case=score_rows())
def test_fuse_one_is_fuse_bit_for_bit_or_declines(background_scale, case):
    rows, k = case
    fusion = BackgroundZFusion(background_scale, SIZES)
    ranked = fusion.fuse_one(rows, "text", k)
    if ranked is None:
        short = min(len(r) for r in rows.values()) < MIN_BACKGROUND_LIST
        z = None if short else background_scale.transform_row(rows, "text", SIZES)
        assert short or z is None or merge_row(z, k) is None
        return
    assert_same_ranking(ranked, fusion.fuse(as_batch(rows), k))


def test_other_methods_have_no_shortcut(background_scale):
    from mmgap_core.fusion import make_method

    rows = {"text": [0.5, 0.4, 0.3], "image": [0.2, 0.1, 0.0]}
    assert make_method("rrf").fuse_one(rows, "text", 3) is None
    assert (
        FusionMethod.fuse_one(BackgroundZFusion(background_scale, SIZES), rows, "text", 3) is None
    )


# ---------------------------------------------------------------- result building
def test_a_result_from_plain_values_is_the_result_from_a_ranking(background_scale):
    rng = np.random.default_rng(9)
    rows = {m: sorted_row(rng, 8, 0.1 * j) for j, m in enumerate(MODS)}
    hits = {
        m: ModalityHits(
            m,
            [[f"{m}-{i}" for i in range(8)]],
            np.array([r], dtype=np.float32),
            [[f"doc {i}" for i in range(8)]],
            [[None] * 8],
            [[{"i": i} for i in range(8)]],
        )
        for m, r in rows.items()
    }
    raw = {m: h.scores[0].tolist() for m, h in hits.items()}
    fusion = BackgroundZFusion(background_scale, SIZES)
    ranked = fusion.fuse_one(raw, "text", 6)
    fused = fusion.fuse(CandidateBatch.from_hits(hits, "text"), 6)
    want = SearchResult.from_ranking(fused, hits, "background-z", "text", ["note"])
    for given_raw in (raw, None):
        got = SearchResult.from_ranked(
            ranked, list(hits), hits, "background-z", "text", ["note"], given_raw
        )
        assert got.hits == want.hits and got.warnings == want.warnings
    assert [type(h.score) for h in want.hits] == [float] * 6


def test_fuse_one_leaves_long_lists_to_numpy(background_scale):
    from mmgap_core.fusion_background import MAX_ONE_QUERY_CANDIDATES

    rng = np.random.default_rng(11)
    fusion = BackgroundZFusion(background_scale, SIZES)
    half = MAX_ONE_QUERY_CANDIDATES // 2
    at_limit = {m: sorted_row(rng, half, 0.1 * j) for j, m in enumerate(MODS)}
    assert_same_ranking(fusion.fuse_one(at_limit, "text", 10), fusion.fuse(as_batch(at_limit), 10))
    over = {m: sorted_row(rng, half + 1, 0.1 * j) for j, m in enumerate(MODS)}
    assert fusion.fuse_one(over, "text", 10) is None


@pytest.mark.parametrize("modality", MODS)
def test_fuse_one_of_a_single_modality_is_fuse(background_scale, modality):
    rows = {modality: sorted_row(np.random.default_rng(12), 12)}
    fusion = BackgroundZFusion(background_scale, SIZES)
    assert_same_ranking(fusion.fuse_one(rows, "text", 5), fusion.fuse(as_batch(rows), 5))
