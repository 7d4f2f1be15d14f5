"""Ranking quality: the paper's method against a plain-numpy reference; the default on real CLIP.

The real embeddings are OpenAI CLIP ViT-B/16 on 500 MS-COCO pairs (benchmarks/data/real-embeddings,
MIT); the sets are the ones `benchmarks/bench_quality.py` builds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mmgap_core.evaluation import evaluate_embeddings
from mmgap_core.fusion import DEFAULT_METHOD
from mmgap_core.simulator import PROFILES, simulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_quality import coco_sets  # noqa: E402


def paper_reference_recall(queries, corpus, labels, relevant, k=10):
    """The paper's method in plain numpy: top-1 per modality -> mean/std -> z -> merged top-k."""
    scores = queries.astype(np.float64) @ corpus.T.astype(np.float64)
    z = np.empty_like(scores)
    for m in np.unique(labels):
        cols = labels == m
        top1 = scores[:, cols].max(axis=1)
        z[:, cols] = (scores[:, cols] - top1.mean()) / top1.std()
    top = np.argsort(-z, axis=1, kind="stable")[:, :k]
    return (top == relevant[:, None]).any(axis=1)


def recall_by_part(report, method, query_modality, metric="recall@10"):
    out = {}
    for row in report.results:
        if row["method"] == method and row["metric"] == metric and row["subset"] != "all":
            out["same" if row["subset"] == query_modality else "cross"] = row["value"]
    return out


@pytest.mark.parametrize("profile", [p for p in PROFILES if "multimodal" not in p])
def test_standardize_matches_a_plain_numpy_reference(profile):
    d = simulate(profile)
    report = evaluate_embeddings(
        d.queries,
        d.corpus,
        d.modalities,
        d.qrels,
        query_modality=d.query_modality,
        methods=["standardize"],
        ks=(10,),
    )
    hit = paper_reference_recall(d.queries, d.corpus, d.modalities, d.relevant_rows)
    cross = d.target_modality != d.query_modality
    got = recall_by_part(report, "standardize", d.query_modality)
    assert got["cross"] == pytest.approx(hit[cross].mean(), abs=0.01)
    assert got["same"] == pytest.approx(hit[~cross].mean(), abs=0.01)


@pytest.mark.parametrize("index", [0, 1], ids=["t2i", "i2t"])
def test_default_ranks_real_clip_cross_modal_better_than_the_paper_and_rrf(index):
    s = coco_sets()[index]
    report = evaluate_embeddings(
        s.queries,
        s.corpus,
        s.labels,
        s.qrels,
        query_modality=s.query_modality,
        methods=["raw", "standardize", "rrf", DEFAULT_METHOD],
        ks=(1, 10),
        pool=50,
    )
    methods = ("raw", "standardize", "rrf", DEFAULT_METHOD)
    r10 = {m: recall_by_part(report, m, s.query_modality)["cross"] for m in methods}
    ndcg = {
        m: recall_by_part(report, m, s.query_modality, "ndcg@10")["cross"]
        for m in ("standardize", "rrf", DEFAULT_METHOD)
    }
    assert r10["raw"] == 0.0  # the modality gap: raw cosine never shows the other modality
    assert r10[DEFAULT_METHOD] > r10["standardize"] + 0.1
    assert r10[DEFAULT_METHOD] >= r10["rrf"] - 0.01
    assert ndcg[DEFAULT_METHOD] > max(ndcg["standardize"], ndcg["rrf"])
    assert report.stats["default_method"] == DEFAULT_METHOD


@pytest.mark.parametrize("profile", ["clip-like", "clip-like-multimodal", "hard-distractors"])
def test_default_meets_the_bound_of_issue_9_on_the_hardest_profiles(profile):
    """Cross- and same-modal R@10 and nDCG@10 within 0.01 of the best baseline (bench_quality)."""
    from bench_quality import bound_failures, evaluate_set, simulator_sets

    (s,) = simulator_sets([profile], 1)
    res = evaluate_set(
        s, ["raw", "standardize", "zscore-per-query", "minmax", "rrf", "center", DEFAULT_METHOD], 50
    )
    assert bound_failures(s.name, res, DEFAULT_METHOD) == []
