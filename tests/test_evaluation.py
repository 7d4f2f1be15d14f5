"""Metrics, the evaluation pipeline, and the `mmgap eval` / `mmgap bench` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmgap_core.cli import main
from mmgap_core.evaluation import evaluate_embeddings
from mmgap_core.fusion import METHOD_NAMES
from mmgap_core.metrics import Qrels, evaluate_ranking
from mmgap_core.post_processing import default_n_directions
from mmgap_core.simulator import simulate

# ------------------------------------------------------------------ metrics by hand


def _rows(results, subset, metric):
    return next(r["value"] for r in results if r["subset"] == subset and r["metric"] == metric)


def test_metrics_match_hand_computation():
    # query 0: relevant doc 3 (image) at rank 2; query 1: relevant docs 0 (text, rel 2) at rank 1
    # and 1 (text) missing from the top 3.
    ranking = np.array([[5, 3, 4], [0, 2, 4]])
    mods = np.array(["text", "text", "text", "image", "image", "image"])
    ranked_mods = mods[ranking]
    qrels = Qrels(np.array([[0, 3, 1], [1, 0, 2], [1, 1, 1]]), 2)
    res = evaluate_ranking(ranking, ranked_mods, qrels, mods, ks=(1, 3))
    assert _rows(res, "all", "recall@1") == pytest.approx((0 + 0.5) / 2)
    assert _rows(res, "all", "recall@3") == pytest.approx((1 + 0.5) / 2)
    assert _rows(res, "image", "mrr@3") == pytest.approx(0.5)
    assert _rows(res, "text", "mrr@3") == pytest.approx(1.0)
    # nDCG@3 of query 1: gains [2, 0, 0] against ideal [2, 1, 0]
    ideal = 2 + 1 / np.log2(3)
    assert _rows(res, "text", "ndcg@3") == pytest.approx(2 / ideal)
    assert _rows(res, "image", "share_image@3") == pytest.approx(1.0)
    assert _rows(res, "text", "share_image@3") == pytest.approx(1 / 3)
    assert _rows(res, "all", "share_text@1") == pytest.approx(0.5)


def test_qrels_relevance_zero_is_not_relevant_and_short_rankings_pad():
    qrels = Qrels(np.array([[0, 1, 0], [0, 2, 1]]), 1)
    res = evaluate_ranking(
        np.array([[1, 2]]),
        np.array([["text", "image"]]),
        qrels,
        ["text", "text", "image"],
        ks=(1, 5),
    )
    assert _rows(res, "all", "recall@1") == 0.0
    assert _rows(res, "all", "recall@5") == 1.0


# ------------------------------------------------------------------ pipeline


@pytest.fixture(scope="module")
def clip_like():
    return simulate("clip-like")


def test_standardize_beats_raw_cross_modal_on_gap_profile(clip_like):
    d = clip_like
    rep = evaluate_embeddings(d.queries, d.corpus, d.modalities, d.qrels, methods="raw,standardize")
    raw = rep.value("raw", "image", "recall@20")
    std = rep.value("standardize", "image", "recall@20")
    assert std > raw + 0.2, (raw, std)
    assert "transductive" in rep.stats["calibration"]["setting"]


def test_every_method_runs_and_json_shape(clip_like):
    d = clip_like
    rep = evaluate_embeddings(d.queries, d.corpus, d.modalities, d.qrels, ks=(1, 5, 20))
    out = rep.to_json()
    assert set(out) == {"results", "stats"}
    methods = {r["method"] for r in out["results"]}
    assert methods == set(METHOD_NAMES)
    for r in out["results"]:
        assert set(r) == {"method", "subset", "metric", "value"}
        assert r["subset"] in {"all", "text", "image"}
        assert r["metric"].split("@")[0] in {"recall", "mrr", "ndcg", "share_text", "share_image"}
    json.dumps(out, allow_nan=False)


def test_inductive_calibration_queries_are_used(clip_like):
    d = clip_like
    half = d.queries.shape[0] // 2
    rep = evaluate_embeddings(
        d.queries,
        d.corpus,
        d.modalities,
        d.qrels,
        calibration_queries=d.queries[:half],
        methods="standardize",
    )
    assert rep.stats["calibration"]["n_queries"] == half
    assert "inductive" in rep.stats["calibration"]["setting"]


def test_pipeline_rejects_bad_input(clip_like):
    d = clip_like
    bad = d.corpus.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_embeddings(d.queries, bad, d.modalities, d.qrels)
    with pytest.raises(ValueError, match="dimension mismatch"):
        evaluate_embeddings(d.queries[:, :10], d.corpus, d.modalities, d.qrels)
    with pytest.raises(ValueError, match="labels for"):
        evaluate_embeddings(d.queries, d.corpus, d.modalities[:-1], d.qrels)
    with pytest.raises(ValueError, match="unknown fusion method"):
        evaluate_embeddings(d.queries, d.corpus, d.modalities, d.qrels, methods="raw,best")


# ------------------------------------------------------------------ `mmgap eval`


def test_eval_cli_on_simulator_files(tmp_path, clip_like, capsys):
    files = clip_like.write(tmp_path / "sim")
    out_json = tmp_path / "out.json"
    rc = main(
        [
            "eval",
            "--queries",
            str(files["queries"]),
            "--corpus",
            str(files["corpus"]),
            "--modality",
            str(files["modality"]),
            "--qrels",
            str(files["qrels"]),
            "--k",
            "1,5,10,20",
            "--json",
            str(out_json),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "transductive" in printed
    assert "relevant item is image (cross-modal)" in printed
    data = json.loads(out_json.read_text())
    rows = {(r["method"], r["subset"], r["metric"]): r["value"] for r in data["results"]}
    assert rows[("standardize", "image", "recall@20")] > rows[("raw", "image", "recall@20")]
    assert data["stats"]["calibration"]["statistics"]["format"] == "mmgap.standardizer"
    assert data["stats"]["default_method"] == "two-view-z"
    centred = data["stats"]["calibration"]["centered_background_scale"]
    assert centred["format"] == "mmgap.centered_background_scale" and centred["keys"]
    n = default_n_directions(data["stats"]["dim"])  # Mu & Viswanath's rule for the width
    assert data["stats"]["calibration"]["n_directions"] == {"text": n, "image": n}


def _hand_files(tmp_path):
    """A tiny hand-written dataset with string ids: 2 text queries, corpus of 2 texts + 2 images."""
    corpus = np.array([[1, 0, 0], [0.9, 0.1, 0], [0.2, 1, 0], [0.25, 0.9, 0.3]], dtype=np.float32)
    queries = np.array([[1, 0.05, 0], [0.5, 0.6, 0.1]], dtype=np.float32)
    np.save(tmp_path / "q.npy", queries)
    np.save(tmp_path / "c.npy", corpus)
    (tmp_path / "m.txt").write_text("text\ntext\nimage\nimage\n")
    (tmp_path / "qids.txt").write_text("qa\nqb\n")
    (tmp_path / "dids.txt").write_text("t1\nt2\ni1\ni2\n")
    (tmp_path / "qrels.tsv").write_text("qa 0 t1 1\nqb 0 i2 1\n")
    return [
        "eval",
        "--queries",
        str(tmp_path / "q.npy"),
        "--corpus",
        str(tmp_path / "c.npy"),
        "--modality",
        str(tmp_path / "m.txt"),
        "--qrels",
        str(tmp_path / "qrels.tsv"),
        "--query-ids",
        str(tmp_path / "qids.txt"),
        "--doc-ids",
        str(tmp_path / "dids.txt"),
        "--k",
        "1,2",
        "--pool",
        "2",
    ]


def test_eval_cli_on_hand_written_files_with_ids(tmp_path, capsys):
    args = _hand_files(tmp_path)
    assert main(args + ["--json", str(tmp_path / "o.json")]) == 0
    data = json.loads((tmp_path / "o.json").read_text())
    rows = {(r["method"], r["subset"], r["metric"]): r["value"] for r in data["results"]}
    assert rows[("raw", "text", "recall@1")] == 1.0


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: (p / "qids.txt").write_text("qa\n"), "1 ids for 2 rows"),
        (lambda p: (p / "dids.txt").write_text("t1\nt2\ni1\ni1\n"), "duplicate"),
        (lambda p: (p / "qrels.tsv").write_text("qa 0 t1\n"), "line 1: expected 4 fields"),
        (lambda p: (p / "qrels.tsv").write_text("qa 0 t1 x\n"), "relevance 'x' is not an integer"),
        (lambda p: (p / "m.txt").write_text("text\ntext\nimage\n"), "3 labels for 4 corpus rows"),
        (lambda p: np.save(p / "c.npy", np.full((4, 3), np.inf, dtype=np.float32)), "NaN or inf"),
        (lambda p: np.save(p / "q.npy", np.ones((2, 5), dtype=np.float32)), "dimension mismatch"),
        (lambda p: (p / "qrels.tsv").write_text("qa 0 nope 1\n"), "no positive judgement"),
    ],
)
def test_eval_cli_bad_input_names_the_problem(tmp_path, capsys, mutate, message):
    args = _hand_files(tmp_path)
    mutate(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_eval_cli_unknown_modality_label_for_query_modality(tmp_path, capsys):
    args = _hand_files(tmp_path)
    (tmp_path / "m.txt").write_text("text\n \nimage\nimage\n")
    assert main(args) == 2
    assert "line 2 is empty" in capsys.readouterr().err


def test_eval_cli_qrels_row_numbers_without_id_files(tmp_path, capsys):
    args = _hand_files(tmp_path)
    args = args[: args.index("--query-ids")] + args[args.index("--k") :]
    (tmp_path / "qrels.tsv").write_text("0 0 0 1\n1 0 3 1\n")
    assert main(args) == 0
    (tmp_path / "qrels.tsv").write_text("qa 0 0 1\n")
    assert main(args) == 2
    assert "not a row number" in capsys.readouterr().err


# ------------------------------------------------------------------ `mmgap bench`


def test_bench_prints_tables_and_writes_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    rc = main(
        [
            "bench",
            "--profiles",
            "clip-like,small-gap",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    for needle in (
        "== profile clip-like",
        "== profile small-gap",
        "recall@20",
        "mrr@10",
        "ndcg@10",
        "share_image@20",
        "cross-modal",
        "same-modal",
    ):
        assert needle in printed
    data = json.loads(out_json.read_text())
    assert set(data["profiles"]) == {"clip-like", "small-gap"}
    assert out_png.stat().st_size > 10_000
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_unknown_profile(capsys):
    assert main(["bench", "--profiles", "nope"]) == 2
    assert "unknown simulator profile" in capsys.readouterr().err
