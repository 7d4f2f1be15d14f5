"""`benchmarks/bench_tradeoff.py`: the shifted default equals the default at b=0; b moves items."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_quality import evaluate_set, simulator_sets  # noqa: E402
from bench_tradeoff import OwnModalityShift, fit_default, score_parts  # noqa: E402

from mmgap_core.fusion import DEFAULT_METHOD  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    (s,) = simulator_sets(["clip-like"], 1)
    method, batch = fit_default(s, 50)
    return s, method, batch


def test_zero_shift_reproduces_the_default(fitted):
    s, method, batch = fitted
    ref = evaluate_set(s, [DEFAULT_METHOD], 50)[DEFAULT_METHOD]
    mine = score_parts(s, OwnModalityShift(method, 0.0), batch)
    assert mine["cross"] and mine["same"]
    for part in ("cross", "same"):
        assert mine[part].keys() == ref[part].keys()
        for metric, value in ref[part].items():
            assert mine[part][metric] == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("shift", [1e6, -1e6])
def test_a_large_shift_puts_one_modality_on_top(fitted, shift):
    s, method, batch = fitted
    top = OwnModalityShift(method, shift).fuse(batch, 10).modality_labels()
    own = top == s.query_modality
    assert own.all() if shift > 0 else not own.any()
    unshifted = OwnModalityShift(method, 0.0).fuse(batch, 10).modality_labels()
    assert 0 < np.mean(unshifted == s.query_modality) < 1
