"""`benchmarks/bench_tradeoff.py`: the shifted default equals the default at b=0; b moves items;
the order-keeping ceiling bounds every score-only method."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_quality import coco_sets, evaluate_set, simulator_sets  # noqa: E402
from bench_tradeoff import (  # noqa: E402
    SHIFTED_BASE,
    OwnModalityShift,
    fit_default,
    order_reach,
    score_parts,
)


@pytest.fixture(scope="module")
def fitted():
    (s,) = simulator_sets(["clip-like"], 1)
    fusers, batch, retrieved = fit_default(s, 50, (SHIFTED_BASE, "center"))
    return s, fusers[SHIFTED_BASE], batch, fusers, retrieved


def test_zero_shift_reproduces_the_default(fitted):
    s, method, batch, *_ = fitted
    ref = evaluate_set(s, [SHIFTED_BASE], 50)[SHIFTED_BASE]
    mine = score_parts(s, OwnModalityShift(method, 0.0), batch)
    assert mine["cross"] and mine["same"]
    for part in ("cross", "same"):
        assert mine[part].keys() == ref[part].keys()
        for metric, value in ref[part].items():
            assert mine[part][metric] == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("shift", [1e6, -1e6])
def test_a_large_shift_puts_one_modality_on_top(fitted, shift):
    s, method, batch, *_ = fitted
    top = OwnModalityShift(method, shift).fuse(batch, 10).modality_labels()
    own = top == s.query_modality
    assert own.all() if shift > 0 else not own.any()
    unshifted = OwnModalityShift(method, 0.0).fuse(batch, 10).modality_labels()
    assert 0 < np.mean(unshifted == s.query_modality) < 1


SCORE_ONLY = ("standardize", "zscore-per-query", "minmax", "rrf", SHIFTED_BASE)


def test_order_reach_matches_the_harness_and_bounds_score_only_methods(fitted):
    s, _, batch, fusers, retrieved = fitted
    reach = order_reach(s, fusers, batch, retrieved)
    ref = evaluate_set(s, [*SCORE_ONLY, "center"], 50)
    assert reach["center"] == pytest.approx(ref["center"]["same"]["recall@10"], abs=1e-12)
    assert reach["background_z"] == pytest.approx(ref[SHIFTED_BASE]["same"]["recall@10"], abs=1e-12)
    assert reach["center_within"] + reach["center_beyond"] == pytest.approx(reach["center"])
    # No method that keeps each modality's cosine order gets past the ceiling...
    for name in SCORE_ONLY:
        assert ref[name]["same"]["recall@10"] <= reach["ceiling"] + 1e-12, name
    # ...and center, which re-scores with embeddings, does on this set.
    assert reach["center_beyond"] > 0
    assert reach["center_within"] <= reach["ceiling"] + 1e-12


def test_order_reach_is_none_without_same_modal_queries():
    s = coco_sets()[0]
    fusers, batch, retrieved = fit_default(s, 20, (SHIFTED_BASE, "center"))
    assert order_reach(s, fusers, batch, retrieved) is None
