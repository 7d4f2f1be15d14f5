"""The retrieval simulator: determinism, formats, CLIP-like statistics, and that it shows the gap.

The ranking checks run the real core (mine_pseudo_positives -> ModalityStandardizer) and compute a
plain merged top-20 over the whole corpus here, independently of mmgap_core.fusion.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from mmgap_core.mining import mine_pseudo_positives
from mmgap_core.simulator import (
    PROFILES,
    SimulatedData,
    SimulatorProfile,
    profile_table,
    simulate,
)
from mmgap_core.stats import ModalityStandardizer

REQUIRED_PROFILES = ("clip-like", "clip-like-image-queries", "small-gap", "hard-distractors")


@functools.lru_cache(maxsize=None)
def cached(name: str) -> SimulatedData:
    # Tests only read the arrays, so one simulation per profile is shared.
    return simulate(name)


def standardizer_for(data: SimulatedData) -> ModalityStandardizer:
    """The paper's calibration: each query's top-1 cosine per modality, no labels."""
    pairs = mine_pseudo_positives(data.queries, data.corpus, data.modalities).pairs()
    return ModalityStandardizer().fit(*pairs, data.query_modality)


def merged_ranks(data: SimulatedData, standardize: bool) -> np.ndarray:
    """0-based rank of each query's relevant row in the merged ranking of the whole corpus."""
    scores = data.queries.astype(np.float64) @ data.corpus.T.astype(np.float64)
    if standardize:
        st = standardizer_for(data)
        for m in np.unique(data.modalities):
            cols = data.modalities == m
            scores[:, cols] = st.transform(scores[:, cols], str(m), data.query_modality)
    rel = data.relevant_rows
    rel_score = scores[np.arange(rel.size), rel]
    return (scores > rel_score[:, None]).sum(axis=1)


def recall_at(data: SimulatedData, standardize: bool, k: int = 20) -> dict[str, float]:
    """Recall@k of the merged ranking, split by whether the relevant item is cross-modal."""
    hit = merged_ranks(data, standardize) < k
    cross = data.target_modality != data.query_modality
    return {"cross": hit[cross].mean(), "same": hit[~cross].mean(), "all": hit.mean()}


# ---------------------------------------------------------------- profiles and API


def test_required_profiles_exist_and_are_listed():
    table = profile_table()
    for name in REQUIRED_PROFILES:
        assert name in PROFILES
        assert PROFILES[name].name == name
        assert name in table and PROFILES[name].description in table
    assert len(table.splitlines()) == len(PROFILES)
    assert PROFILES["clip-like"].query_modality == "text"
    assert PROFILES["clip-like-image-queries"].query_modality == "image"


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown simulator profile 'nope'.*clip-like.*small-gap"):
        simulate("nope")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"query_modality": "audio"}, "query_modality"),
        ({"rho": 1.5}, "rho"),
        ({"both_share": -0.1}, "both_share"),
        ({"n_items": 100}, "n_items"),
        ({"distractor_closeness": 1.0}, "distractor_closeness"),
        ({"noise_text": float("nan")}, "noise_text"),
        ({"aniso_rank": 500}, "aniso_rank"),
    ],
)
def test_invalid_profile_parameters_raise(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(PROFILES["clip-like"], **change)


def test_simulate_accepts_a_profile_object():
    small = dataclasses.replace(
        PROFILES["clip-like"], name="tiny", dim=32, n_items=300, n_queries=40, seed=7
    )
    assert isinstance(small, SimulatorProfile)
    data = simulate(small)
    assert data.profile == "tiny"
    assert data.queries.shape == (40, 32)


def test_deterministic_bit_identical():
    small = dataclasses.replace(PROFILES["hard-distractors"], dim=64, n_items=2000, n_queries=120)
    a, b = simulate(small), simulate(small)
    for field in ("queries", "corpus", "modalities", "qrels", "target_modality", "corpus_items"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), field
    other = simulate(dataclasses.replace(small, seed=small.seed + 1))
    assert not np.array_equal(a.queries, other.queries)
    # The named profile equals a fresh run too (the cache is not hiding a difference).
    assert simulate("small-gap").corpus.tobytes() == cached("small-gap").corpus.tobytes()


@pytest.mark.parametrize("name", REQUIRED_PROFILES)
def test_shapes_dtypes_norms_and_qrels(name):
    p, data = PROFILES[name], cached(name)
    n_q, d = p.n_queries, p.dim
    assert data.profile == name and data.query_modality == p.query_modality
    assert data.queries.dtype == np.float32 and data.queries.shape == (n_q, d)
    assert data.corpus.dtype == np.float32 and data.corpus.ndim == 2 and data.corpus.shape[1] == d
    n = data.corpus.shape[0]
    assert 4000 <= n <= 10000  # small enough for sub-second mining + fusion
    np.testing.assert_allclose(np.linalg.norm(data.queries, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(data.corpus, axis=1), 1.0, atol=1e-5)
    assert data.modalities.shape == (n,)
    assert set(data.modalities.tolist()) == {"text", "image"}
    # Modalities are interleaved, not stored as two blocks.
    assert (data.modalities[1:] != data.modalities[:-1]).sum() > n // 10
    # Exactly one relevant row per query, in the query's target modality.
    assert data.qrels.dtype == np.int64 and data.qrels.shape == (n_q, 3)
    assert sorted(data.qrels[:, 0].tolist()) == list(range(n_q))
    assert (data.qrels[:, 2] > 0).all()
    assert data.qrels[:, 1].min() >= 0 and data.qrels[:, 1].max() < n
    assert len(set(data.qrels[:, 1].tolist())) == n_q
    assert data.target_modality.shape == (n_q,)
    assert (data.modalities[data.relevant_rows] == data.target_modality).all()
    cross_share = (data.target_modality != data.query_modality).mean()
    assert cross_share == pytest.approx(p.cross_modal_share, abs=1 / n_q)
    # Some items have both a text and an image row (a mixed corpus, not two disjoint ones).
    items, counts = np.unique(data.corpus_items, return_counts=True)
    assert counts.max() == 2 and (counts == 2).sum() > n // 20
    assert items.size == data.corpus_items.size - (counts == 2).sum()


# ---------------------------------------------------------------- write()


def test_write_round_trips(tmp_path):
    data = cached("clip-like")
    paths = data.write(tmp_path / "sim")
    assert set(paths) == {"queries", "corpus", "modality", "qrels"}
    assert {p.name for p in paths.values()} == {
        "queries.npy",
        "corpus.npy",
        "modality.txt",
        "qrels.tsv",
    }
    queries, corpus = np.load(paths["queries"]), np.load(paths["corpus"])
    assert queries.dtype == np.float32 and corpus.dtype == np.float32
    assert queries.tobytes() == data.queries.tobytes()
    assert corpus.tobytes() == data.corpus.tobytes()
    labels = paths["modality"].read_text(encoding="utf-8").splitlines()
    assert labels == data.modalities.tolist()
    rows = [line.split() for line in paths["qrels"].read_text(encoding="utf-8").splitlines()]
    assert all(len(r) == 4 and r[1] == "0" for r in rows)
    parsed = np.array([[int(r[0]), int(r[2]), int(r[3])] for r in rows], dtype=np.int64)
    np.testing.assert_array_equal(parsed, data.qrels)
    # Ids are plain decimal row numbers that index the arrays.
    assert all(r[0].isdigit() and r[2].isdigit() for r in rows)
    assert int(max(parsed[:, 1])) < corpus.shape[0]


# ---------------------------------------------------------------- the modality gap


def test_clip_like_raw_score_statistics():
    s = cached("clip-like").score_statistics()
    assert s["query_vs_random_text"] == pytest.approx(0.5, abs=0.06)
    assert s["query_vs_random_image"] == pytest.approx(0.15, abs=0.04)
    assert s["query_vs_relevant_image"] == pytest.approx(0.3, abs=0.05)
    assert s["paired_text_image"] == pytest.approx(0.3, abs=0.05)
    # A relevant text beats random texts; the relevant image sits far below every random text.
    assert s["query_vs_relevant_text"] > s["query_vs_random_text"] + 0.1
    assert s["query_vs_relevant_image"] < s["query_vs_random_text"] - 0.15


def test_image_query_profile_mirrors_the_gap():
    s = cached("clip-like-image-queries").score_statistics()
    assert s["query_vs_random_image"] == pytest.approx(0.5, abs=0.06)
    assert s["query_vs_random_text"] == pytest.approx(0.15, abs=0.04)
    assert s["query_vs_relevant_text"] == pytest.approx(0.3, abs=0.05)


def test_small_gap_profile_has_little_gap():
    s = cached("small-gap").score_statistics()
    assert abs(s["query_vs_random_text"] - s["query_vs_random_image"]) < 0.03


def test_raw_merged_top20_is_flooded_by_the_query_modality():
    data = cached("clip-like")
    scores = data.queries @ data.corpus.T
    top = np.argpartition(-scores, 20, axis=1)[:, :20]
    assert (data.modalities[top] == "text").mean() > 0.97


@pytest.mark.parametrize("name", ["clip-like", "clip-like-image-queries", "hard-distractors"])
def test_standardization_recovers_cross_modal_items(name):
    data = cached(name)
    raw, std = recall_at(data, False), recall_at(data, True)
    assert raw["cross"] < 0.2
    assert std["cross"] > 0.5 and std["cross"] > 2 * raw["cross"]
    assert std["cross"] < 0.95  # realistic, not a solved problem
    assert std["same"] > 0.5 and std["same"] > raw["same"] - 0.15
    assert std["all"] > raw["all"] + 0.2


def test_standardizer_sees_the_gap_on_clip_like():
    gap = standardizer_for(cached("clip-like")).gap("text")
    assert gap["text"] - gap["image"] > 0.3


def test_hard_distractors_make_the_top_rank_harder():
    same = {}
    for name in ("clip-like", "hard-distractors"):
        data = cached(name)
        ranks = merged_ranks(data, standardize=False)
        same[name] = (ranks[data.target_modality == data.query_modality] == 0).mean()
    assert same["hard-distractors"] < same["clip-like"] - 0.1


def test_small_gap_standardization_barely_matters():
    data = cached("small-gap")
    raw, std = recall_at(data, False), recall_at(data, True)
    for key in ("cross", "same", "all"):
        assert abs(std[key] - raw[key]) < 0.05, (key, raw, std)
