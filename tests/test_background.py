"""BackgroundScale: the estimator behind the `background-z` fusion method."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmgap_core.background import (
    FIRST_BACKGROUND_RANK,
    BackgroundScale,
    background_location,
    normal_order_scores,
)


def gaussian_lists(n_queries, n_items, k, sigma, rng, planted=None):
    """Top-k of n_items Gaussian background scores per query, each query with its own location."""
    mu = rng.uniform(0.1, 0.6, n_queries)
    scores = mu[:, None] + sigma * rng.standard_normal((n_queries, n_items))
    if planted is not None:
        scores[:, 0] = mu + planted * sigma
    top = -np.sort(-scores, axis=1)[:, :k]
    return top, mu


def test_order_scores_match_the_expected_maximum_of_normal_draws():
    rng = np.random.default_rng(0)
    draws = -np.sort(-rng.standard_normal((4000, 1000)), axis=1)[:, :5].mean(axis=0)
    np.testing.assert_allclose(normal_order_scores(1000, 5), draws, atol=0.03)
    a = normal_order_scores(1000, 50)
    assert (np.diff(a) < 0).all()


def test_order_scores_reject_bad_sizes():
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="n_items"):
            normal_order_scores(bad, 5)


def test_fit_recovers_the_background_scale_and_z_of_a_planted_item():
    rng = np.random.default_rng(1)
    sigma = 0.05
    lists, mu = gaussian_lists(300, 5000, 50, sigma, rng)
    bs = BackgroundScale().fit({"image": lists}, "text", {"image": 5000})
    assert bs.scale("image", "text") == pytest.approx(sigma, rel=0.05)
    planted, _ = gaussian_lists(200, 5000, 50, sigma, np.random.default_rng(2), planted=8.0)
    z = bs.transform(planted, "image", "text")
    assert np.median(z[:, 0]) == pytest.approx(8.0, abs=0.4)
    # the best background item sits near the expected maximum of 5,000 normal draws
    assert np.median(z[:, 1]) == pytest.approx(normal_order_scores(5000, 1)[0], abs=0.4)


def test_location_follows_each_query():
    rng = np.random.default_rng(3)
    lists, mu = gaussian_lists(200, 3000, 50, 0.04, rng)
    loc = background_location(lists, 0.04, 3000)
    assert np.corrcoef(loc, mu)[0, 1] > 0.99
    assert np.abs(loc - mu).max() < 0.02


def test_z_is_stable_across_list_lengths():
    rng = np.random.default_rng(4)
    lists, _ = gaussian_lists(200, 4000, 200, 0.05, rng, planted=7.0)
    bs = BackgroundScale().fit({"text": lists[:, :50]}, "text", {"text": 4000})
    tops = [np.median(bs.transform(lists[:, :k], "text", "text")[:, 0]) for k in (10, 50, 200)]
    assert max(tops) - min(tops) < 0.3


@settings(max_examples=40, deadline=None)
@given(
    shift=st.floats(-0.5, 0.5),
    k=st.integers(3, 40),
    seed=st.integers(0, 2**16),
)
def test_z_is_shift_invariant_and_keeps_order(shift, k, seed):
    rng = np.random.default_rng(seed)
    lists, _ = gaussian_lists(5, 500, k, 0.05, rng)
    bs = BackgroundScale().fit({"text": lists}, "text", {"text": 500})
    z = bs.transform(lists, "text", "text")
    np.testing.assert_allclose(bs.transform(lists + shift, "text", "text"), z, atol=1e-6)
    assert (np.diff(z, axis=1) <= 1e-9).all()


@settings(max_examples=30, deadline=None)
@given(split=st.integers(1, 29), seed=st.integers(0, 2**16))
def test_partial_fit_in_chunks_equals_fit(split, seed):
    rng = np.random.default_rng(seed)
    lists, _ = gaussian_lists(30, 400, 20, 0.05, rng)
    whole = BackgroundScale().fit({"image": lists}, "text", {"image": 400})
    parts = BackgroundScale()
    parts.partial_fit({"image": lists[:split]}, "text", {"image": 400})
    parts.partial_fit({"image": lists[split:]}, "text", {"image": 400})
    assert parts.scale("image", "text") == pytest.approx(whole.scale("image", "text"), rel=1e-9)


def test_short_and_empty_rows():
    bs = BackgroundScale().fit(
        {"text": np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.45, 0.4, 0.3]])}, "text", {"text": 100}
    )
    rows = np.array(
        [
            [0.9, 0.8, 0.7, -np.inf],
            [0.7, -np.inf, -np.inf, -np.inf],
            [-np.inf, -np.inf, -np.inf, -np.inf],
        ]
    )
    z = bs.transform(rows, "text", "text")
    assert np.isfinite(z[0, :3]).all() and z[0, 3] == -np.inf
    # one real score: it is taken as the best background item, z = a_1
    assert z[1, 0] == pytest.approx(normal_order_scores(100, 1)[0])
    assert (z[2] == -np.inf).all()


@pytest.mark.parametrize(
    "lists, match",
    [
        (np.array([[0.5, 0.6, 0.4]]), "sorted best first"),
        (np.array([[0.5, np.nan, 0.4]]), "NaN"),
        (np.array([[0.5, -np.inf, 0.4]]), "padding"),
        (np.array([0.5, 0.4]), r"\[n_queries, k\]"),
    ],
)
def test_bad_lists_are_named(lists, match):
    with pytest.raises(ValueError, match=match):
        BackgroundScale().fit({"text": lists}, "text", {"text": 10})


def test_bad_corpus_sizes_and_unknown_keys():
    lists = np.array([[0.9, 0.8, 0.7, 0.6]])
    with pytest.raises(ValueError, match="no size"):
        BackgroundScale().fit({"text": lists}, "text", {})
    with pytest.raises(ValueError, match="positive integer"):
        BackgroundScale().fit({"text": lists}, "text", {"text": 0})
    bs = BackgroundScale().fit({"text": lists}, "text", {"text": 10})
    with pytest.raises(KeyError, match="no background scale"):
        bs.transform(lists, "image", "text")


def test_round_trip_through_json():
    rng = np.random.default_rng(5)
    lists, _ = gaussian_lists(40, 600, 30, 0.05, rng)
    bs = BackgroundScale("m", 512).fit(
        {"text": lists, "image": lists * 0.5}, "text", {"text": 600, "image": 700}
    )
    again = BackgroundScale.from_dict(json.loads(json.dumps(bs.to_dict())))
    for m in ("text", "image"):
        assert again.scale(m, "text") == pytest.approx(bs.scale(m, "text"))
    assert again.corpus_sizes_ == {"text": 600, "image": 700}
    np.testing.assert_allclose(
        again.transform(lists, "text", "text"), bs.transform(lists, "text", "text")
    )


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"format": "other"}, "not background-scale data"),
        ({"version": 9}, "unsupported version"),
        ({"keys": "x"}, "'keys' must be a list"),
        ({"corpus_sizes": {"text": -1}}, "positive integer"),
        (
            {
                "keys": [
                    {
                        "query_modality": "text",
                        "candidate_modality": "text",
                        "count": 0,
                        "log_scale_sum": 1.0,
                    }
                ]
            },
            "count",
        ),
        (
            {
                "keys": [
                    {
                        "query_modality": "text",
                        "candidate_modality": "text",
                        "count": 1,
                        "log_scale_sum": "a",
                    }
                ]
            },
            "number",
        ),
        (
            {
                "keys": [
                    {
                        "query_modality": "text",
                        "candidate_modality": "text",
                        "count": 1,
                        "log_scale_sum": float("inf"),
                    }
                ]
            },
            "finite",
        ),
        ({"dim": True}, "dim"),
    ],
)
def test_malformed_dicts_are_rejected(patch, match):
    lists = np.array([[0.9, 0.8, 0.7, 0.6]])
    data = BackgroundScale().fit({"text": lists}, "text", {"text": 10}).to_dict()
    data.update(patch)
    with pytest.raises(ValueError, match=match):
        BackgroundScale.from_dict(data)


def test_rank_one_never_sets_the_location():
    assert FIRST_BACKGROUND_RANK == 2
    base = np.array([[0.5, 0.4, 0.39, 0.38, 0.37, 0.36]])
    high = base.copy()
    high[0, 0] = 0.95
    np.testing.assert_allclose(
        background_location(base, 0.02, 1000), background_location(high, 0.02, 1000)
    )
