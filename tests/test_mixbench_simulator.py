"""The simulator's three-kind profile: multimodal documents beside texts and images."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from mmgap_core.cli import main
from mmgap_core.evaluation import evaluate_embeddings
from mmgap_core.simulator import PROFILES, simulate

NAME = "clip-like-multimodal"


@functools.lru_cache(maxsize=None)
def cached(name: str):
    return simulate(name)


def test_profile_is_listed_and_has_three_kinds():
    p, data = PROFILES[NAME], cached(NAME)
    assert p.has_multimodal and p.query_modality == "text"
    assert set(data.modalities.tolist()) == {"text", "image", "multimodal"}
    assert 4000 <= data.corpus.shape[0] <= 10000
    np.testing.assert_allclose(np.linalg.norm(data.corpus, axis=1), 1.0, atol=1e-5)
    # a third of the relevant items of each kind, each in its target kind, one row per target
    shares = {k: (data.target_modality == k).mean() for k in ("text", "image", "multimodal")}
    assert all(s == pytest.approx(1 / 3, abs=0.05) for s in shares.values()), shares
    assert (data.modalities[data.relevant_rows] == data.target_modality).all()
    assert len(set(data.relevant_rows.tolist())) == p.n_queries
    # a multimodal document's item has no text or image row of its own
    mm_items = set(data.corpus_items[data.modalities == "multimodal"].tolist())
    other = set(data.corpus_items[data.modalities != "multimodal"].tolist())
    assert mm_items and not mm_items & other


def test_two_kind_profiles_are_untouched():
    for name, p in PROFILES.items():
        if name == NAME:
            continue
        assert not p.has_multimodal
        assert "multimodal" not in set(cached(name).modalities.tolist())
    # the new fields draw no random number unless multimodal documents are on
    base = dataclasses.replace(PROFILES["clip-like"], dim=64, n_items=900, n_queries=100)
    a, b = simulate(base), simulate(dataclasses.replace(base, alpha=0.9))
    assert a.corpus.tobytes() == b.corpus.tobytes() and a.queries.tobytes() == b.queries.tobytes()


def test_multimodal_documents_sit_between_the_two_gaps():
    s = cached(NAME).score_statistics()
    assert s["query_vs_random_image"] < s["query_vs_random_multimodal"] < s["query_vs_random_text"]
    assert s["query_vs_relevant_multimodal"] > s["query_vs_random_multimodal"] + 0.1


def test_every_method_runs_and_standardize_lifts_images_and_documents():
    data = cached(NAME)
    rep = evaluate_embeddings(
        data.queries, data.corpus, data.modalities, data.qrels, methods="raw,standardize", ks=(10,)
    )
    subsets = {r["subset"] for r in rep.results}
    assert subsets == {"all", "text", "image", "multimodal"}
    for kind in ("image", "multimodal"):
        assert (
            rep.value("standardize", kind, "recall@10") > rep.value("raw", kind, "recall@10") + 0.3
        )
    assert rep.value("raw", "image", "recall@10") < 0.05


def test_bench_cli_covers_three_kinds(capsys):
    assert main(["bench", "--profiles", NAME, "--methods", "raw,standardize"]) == 0
    out = capsys.readouterr().out
    assert f"== profile {NAME}" in out
    for kind in ("text", "image", "multimodal"):
        assert f"relevant item is {kind}" in out and f"share_{kind}@20" in out


@pytest.mark.parametrize(
    "change", [{"multimodal_share": 1.5}, {"multimodal_background_share": -0.1}, {"alpha": 2.0}]
)
def test_invalid_multimodal_parameters_raise(change):
    key = next(iter(change))
    with pytest.raises(ValueError, match=f"{key} must be in \\[0, 1\\]"):
        dataclasses.replace(PROFILES[NAME], **change)
