"""`mmgap reproduce`: the paper's experiment end to end on MMQA / WebQA stand-ins, a tiny model."""

from __future__ import annotations

import collections
import csv
import gzip
import json
import shutil

import numpy as np
import pytest

from _fixtures_clip import make_tiny_checkpoint, model_args
from _fixtures_data import result_value, run_main, write_jsonl_gz
from mmgap_core.captioning import MetadataCaptioner
from mmgap_core.datasets import load_dataset, load_mmqa
from mmgap_core.evaluation import EvalReport
from mmgap_core.fusion import METHOD_NAMES
from mmgap_core.reproduce import (
    CAPTION_METHOD,
    ModelResult,
    ModelSpec,
    ReproduceReport,
    context_candidates,
    default_cache_dir,
    limit_dataset,
    parse_model_specs,
    reason_category,
    reproduce,
)

# ----------------------------------------------------------------------------------- helpers


def _model_args(tiny_clip) -> list[str]:
    return model_args(tiny_clip, "--device", "cpu", "--batch-size", "64")


def _only_model(data: dict) -> tuple[str, dict]:
    assert len(data["models"]) == 1
    return next(iter(data["models"].items()))


@pytest.fixture
def count_encoder_calls(monkeypatch):
    """Wrap OpenClipEncoder.embed_texts / embed_images to count how many items reach the encoder."""
    from mmgap_core.encoders.open_clip import OpenClipEncoder

    calls = {"text": 0, "image": 0}
    orig_t, orig_i = OpenClipEncoder.embed_texts, OpenClipEncoder.embed_images

    def texts(self, items, **kw):
        calls["text"] += len(items)
        return orig_t(self, items, **kw)

    def images(self, items, **kw):
        calls["image"] += len(items)
        return orig_i(self, items, **kw)

    monkeypatch.setattr(OpenClipEncoder, "embed_texts", texts)
    monkeypatch.setattr(OpenClipEncoder, "embed_images", images)
    return calls


def _top_k(cands, vec, v, dataset, k) -> set[str]:
    """The k best candidates by raw cosine; ties as the pipeline breaks them (passages before
    images, then corpus order)."""
    order = {
        **{c: (0, n) for n, c in enumerate(dataset.texts)},
        **{c: (1, n) for n, c in enumerate(dataset.images)},
    }
    ranked = sorted(cands, key=lambda c: (-float(vec[c] @ v), *order[c]))
    return set(ranked[:k])


def _hand_raw_recall(encoder, dataset, k: int, image_texts=None) -> dict[str, float]:
    """Raw-cosine Recall@k per gold modality, computed directly: rank each question's candidates.

    With ``image_texts`` (image id -> caption) images are embedded as those texts instead.
    """
    text_ids, image_ids = list(dataset.texts), list(dataset.images)
    tv = encoder.embed_texts(
        [dataset.texts[i] for i in text_ids], strict=True, batch_size=128
    ).vectors
    if image_texts is not None:
        iv = encoder.embed_texts(
            [image_texts[i] for i in image_ids], strict=True, batch_size=128
        ).vectors
    else:
        refs = [dataset.images[i] for i in image_ids]
        iv = encoder.embed_images(
            [str(r.path) if r.path else r.load_bytes() for r in refs], strict=True, batch_size=128
        ).vectors
    vec = {**dict(zip(text_ids, tv)), **dict(zip(image_ids, iv))}
    qv = encoder.embed_texts([q.text for q in dataset.queries], strict=True, batch_size=128).vectors
    per: dict[str, list[float]] = {"text": [], "image": []}
    for q, v in zip(dataset.queries, qv):
        cands = list(q.pool_ids) if q.pool_ids is not None else text_ids + image_ids
        top = _top_k(cands, vec, v, dataset, k)
        per[q.gold_modality].append(len(top & set(q.gold_ids)) / len(q.gold_ids))
    return {m: float(np.mean(v)) for m, v in per.items()}


# ----------------------------------------------------------------------------------- end to end


def test_mmqa_context_end_to_end(tmp_path, mmqa_standin, tiny_clip, tiny_encoder, capsys):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    rc, out, err = run_main(
        capsys,
        [
            "reproduce",
            "--dataset",
            "mmqa",
            "--root",
            mmqa_standin.root,
            *_model_args(tiny_clip),
            "--pool",
            "context",
            "--cache-dir",
            tmp_path / "cache",
            "--json",
            out_json,
            "--csv",
            out_csv,
        ],
    )
    assert rc == 0, err
    # dataset summary with skip counts per reason
    assert "mmqa dev (context pool)" in out
    for line in (
        "2  malformed JSON line (MMQA_dev.jsonl.gz)",
        "1  malformed JSON line (MMQA_texts.jsonl.gz)",
        "1  image file missing",
        "3  gold id not in corpus",
        "1  empty passage",
    ):
        assert line in out
    # progress bars on stderr
    assert "passages [" in err and "images [" in err
    # the paper-style table: a row per method, R@1/5/10/20 split by gold modality, the gain line
    assert "gold = text (same-modal)" in out and "gold = image (cross-modal)" in out
    header = next(line for line in out.splitlines() if line.startswith("method"))
    assert header.split() == ["method"] + ["R@1", "R@5", "R@10", "R@20", "|"] + [
        "R@1",
        "R@5",
        "R@10",
        "R@20",
    ]
    rows = {
        line.split()[0]: line
        for line in out.splitlines()
        if line.split() and line.split()[0] in METHOD_NAMES
    }
    assert set(rows) == set(METHOD_NAMES)
    assert "cross-modal gain of standardize over raw (R@20, gold = image)" in out

    data = json.loads(out_json.read_text())
    assert set(data) == {"dataset", "settings", "models", "skipped"}
    assert data["dataset"]["name"] == "mmqa" and data["dataset"]["pool"] == "context"
    assert data["skipped"]["dataset"]["gold id not in corpus"] == 3
    assert data["skipped"]["models"] == {}
    model_id, model = _only_model(data)
    assert model_id == tiny_encoder.model_id
    assert set(model) == {"results", "stats"}  # the `mmgap eval --json` shape
    assert {r["method"] for r in model["results"]} == set(METHOD_NAMES)
    assert {r["subset"] for r in model["results"]} == {"all", "text", "image"}
    text_n = len(set(mmqa_standin.text_qids) - mmqa_standin.broken_qids)
    image_n = len(set(mmqa_standin.image_qids) - mmqa_standin.broken_qids)
    assert model["stats"]["query_counts"] == {"text": text_n, "image": image_n}
    assert model["stats"]["skipped"] == {} and model["stats"]["dropped_queries"] == {}
    gain = model["stats"]["cross_modal_gain"]
    assert gain["k"] == 20 and gain["absolute"] == pytest.approx(gain["standardize"] - gain["raw"])

    # the numbers match a direct computation of raw-cosine ranking over each question's pool
    hand = _hand_raw_recall(tiny_encoder, load_mmqa(mmqa_standin.root, pool="context"), 20)
    for subset in ("text", "image"):
        assert result_value(model, "raw", subset, "recall@20") == pytest.approx(
            hand[subset], abs=1e-6
        )
    raw_image = result_value(model, "raw", "image", "recall@5")
    assert f"{raw_image:.3f}" in rows["raw"].split("|")[1]

    with out_csv.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["model", "method", "subset", "metric", "value"]
    assert len(table) == len(model["results"])
    row = next(
        r
        for r in table
        if (r["method"], r["subset"], r["metric"]) == ("standardize", "image", "recall@20")
    )
    assert row["model"] == model_id
    assert float(row["value"]) == pytest.approx(
        result_value(model, "standardize", "image", "recall@20")
    )


def test_global_pool_and_cache_reuse(
    tmp_path, mmqa_root, tiny_clip, tiny_encoder, capsys, count_encoder_calls
):
    cache = tmp_path / "cache"
    argv = [
        "reproduce",
        "--root",
        mmqa_root,
        *_model_args(tiny_clip),
        "--pool",
        "global",
        "--cache-dir",
        cache,
        "--no-progress",
    ]
    rc, out, err = run_main(capsys, [*argv, "--json", tmp_path / "first.json"])
    assert rc == 0, err
    first_calls = dict(count_encoder_calls)
    assert first_calls["text"] > 0 and first_calls["image"] > 0
    first = json.loads((tmp_path / "first.json").read_text())
    _, model = _only_model(first)
    assert model["stats"]["embedded"]["new"] > 0
    assert "mmqa dev (global pool)" in out
    assert not list(cache.rglob("*.tmp"))  # atomic writes leave no temporary files
    assert list(cache.rglob("*.npz"))

    hand = _hand_raw_recall(tiny_encoder, load_mmqa(mmqa_root, pool="global"), 10)
    for subset in ("text", "image"):
        assert result_value(model, "raw", subset, "recall@10") == pytest.approx(
            hand[subset], abs=1e-6
        )

    # rerun: everything comes from the cache, the encoder embeds nothing, results are identical
    count_encoder_calls.update(text=0, image=0)
    rc, out, err = run_main(capsys, [*argv, "--json", tmp_path / "second.json"])
    assert rc == 0, err
    assert count_encoder_calls == {"text": 0, "image": 0}
    second = json.loads((tmp_path / "second.json").read_text())
    _, model2 = _only_model(second)
    assert model2["results"] == model["results"]
    assert model2["stats"]["embedded"]["new"] == 0

    # the context corpus is a subset of the global one: reused item by item, still no encoder call
    rc, out, err = run_main(
        capsys,
        [
            "reproduce",
            "--root",
            mmqa_root,
            *_model_args(tiny_clip),
            "--pool",
            "context",
            "--cache-dir",
            cache,
            "--no-progress",
        ],
    )
    assert rc == 0, err
    assert count_encoder_calls == {"text": 0, "image": 0}


def test_webqa_end_to_end(tmp_path, webqa_root, tiny_clip, tiny_encoder, capsys):
    out_json = tmp_path / "w.json"
    rc, out, err = run_main(
        capsys,
        [
            "reproduce",
            "--dataset",
            "auto",
            "--root",
            webqa_root,
            *_model_args(tiny_clip),
            "--cache-dir",
            tmp_path / "c",
            "--k",
            "1,2,5",
            "--json",
            out_json,
            "--no-progress",
        ],
    )
    assert rc == 0, err
    assert "webqa val (context pool)" in out
    for reason in (
        "question has both text and image gold facts",
        "question has no gold facts",
        "image not in imgs.tsv",
        "empty passage",
        "gold id not in corpus",
    ):
        assert reason in out
    assert "cross-modal gain of standardize over raw (R@5, gold = image)" in out
    data = json.loads(out_json.read_text())
    _, model = _only_model(data)
    assert model["stats"]["query_counts"] == {"text": 2, "image": 2}
    assert data["settings"]["ks"] == [1, 2, 5]
    hand = _hand_raw_recall(tiny_encoder, load_dataset("webqa", webqa_root), 2)
    for subset in ("text", "image"):
        assert result_value(model, "raw", subset, "recall@2") == pytest.approx(
            hand[subset], abs=1e-6
        )


def test_models_good_and_bad(tmp_path, mmqa_root, tiny_clip, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    second = make_tiny_checkpoint(tiny_clip.config_path, tmp_path / "tiny_seed1.pt", seed=1)
    name = tiny_clip.model_name
    models = ",".join(
        [
            f"{name}:{tiny_clip.checkpoint_path}",
            f"{name}:{second}",
            f"{name}:no_such_tag",
            f"{name}:{tmp_path / 'missing.pt'}",
            "ViT-B-32:laion2b_s34b_b79k",  # a real tag, offline and not cached
        ]
    )
    out_json = tmp_path / "m.json"
    rc, out, err = run_main(
        capsys,
        [
            "reproduce",
            "--root",
            mmqa_root,
            "--models",
            models,
            "--model-config",
            tiny_clip.config_path,
            "--device",
            "cpu",
            "--weights-dir",
            tmp_path / "no_weights",
            "--cache-dir",
            tmp_path / "c",
            "--methods",
            "raw,standardize",
            "--limit",
            "6",
            "--json",
            out_json,
            "--no-progress",
        ],
    )
    assert rc == 0, err
    data = json.loads(out_json.read_text())
    assert len(data["models"]) == 2
    skipped = data["skipped"]["models"]
    assert set(skipped) == {
        f"{name}:no_such_tag",
        f"{name}:{tmp_path / 'missing.pt'}",
        "ViT-B-32:laion2b_s34b_b79k",
    }
    assert "neither a pretrained tag" in skipped[f"{name}:no_such_tag"]
    assert "neither a pretrained tag" in skipped[f"{name}:{tmp_path / 'missing.pt'}"]
    assert skipped["ViT-B-32:laion2b_s34b_b79k"].startswith("WeightsUnavailableError")
    assert "models skipped:" in out and "ViT-B-32:laion2b_s34b_b79k: WeightsUnavailableError" in out
    # one table over all models: rows = models, raw / standardized R@20 per gold modality, gain
    assert "Recall@20 per model (mmqa dev, context pool" in out
    head = next(line for line in out.splitlines() if line.startswith("model "))
    assert head.split() == [
        "model",
        "text",
        "raw",
        "text",
        "std",
        "image",
        "raw",
        "image",
        "std",
        "gain",
        "abs",
        "diff",
    ]
    for model_id, model in data["models"].items():
        row = next(line for line in out.splitlines() if line.startswith(model_id + " "))
        cells = row.split()[1:]
        assert cells[2] == f"{result_value(model, 'raw', 'image', 'recall@20'):.3f}"
        assert cells[3] == f"{result_value(model, 'standardize', 'image', 'recall@20'):.3f}"
        gain = model["stats"]["cross_modal_gain"]
        assert cells[5] == f"{gain['absolute']:+.3f}"
        assert cells[4] == (
            "n/a" if gain["relative"] is None else f"{100 * gain['relative']:+.1f}%"
        )


def test_all_models_unavailable_exits_2(tmp_path, mmqa_root, tiny_clip, capsys):
    rc, out, err = run_main(
        capsys,
        [
            "reproduce",
            "--root",
            mmqa_root,
            "--model",
            tiny_clip.model_name,
            "--pretrained",
            tmp_path / "gone.pt",
            "--model-config",
            tiny_clip.config_path,
            "--cache-dir",
            tmp_path / "c",
            "--no-progress",
        ],
    )
    assert rc == 2
    assert "mmgap reproduce: error: no model could be run" in err and "gone.pt" in err


def test_no_recognisable_dataset_exits_2(tmp_path, tiny_clip, capsys):
    (tmp_path / "notes.txt").write_text("nothing here")
    rc, out, err = run_main(capsys, ["reproduce", "--root", tmp_path, *_model_args(tiny_clip)])
    assert rc == 2
    assert "mmgap reproduce: error: no recognisable dataset in" in err
    assert "notes.txt" in err and len(err.strip().splitlines()) == 1


def test_one_modality_and_missing_files_exit_2(tmp_path, mmqa_standin, tiny_clip, capsys):
    root = tmp_path / "textonly"
    shutil.copytree(mmqa_standin.root, root)
    write_jsonl_gz(
        root / "MMQA_dev.jsonl.gz", [mmqa_standin.records[q] for q in mmqa_standin.text_qids]
    )
    rc, out, err = run_main(capsys, ["reproduce", "--root", root, *_model_args(tiny_clip)])
    assert rc == 2
    assert "mmgap reproduce: error:" in err and "has no image questions" in err

    (root / "MMQA_texts.jsonl.gz").unlink()
    rc, out, err = run_main(capsys, ["reproduce", "--root", root, *_model_args(tiny_clip)])
    assert rc == 2
    assert "MMQA_texts.jsonl.gz (text passages) not found" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_arguments_exit_2(tmp_path, mmqa_root, tiny_clip, capsys):
    rc, _, err = run_main(capsys, ["reproduce", "--root", mmqa_root])
    assert rc == 2 and "name a model" in err
    rc, _, err = run_main(capsys, ["reproduce", "--root", mmqa_root, "--model", "ViT-B-32"])
    assert rc == 2 and "--model needs --pretrained" in err
    rc, _, err = run_main(
        capsys, ["reproduce", "--root", mmqa_root, *_model_args(tiny_clip), "--methods", "magic"]
    )
    assert rc == 2 and "unknown fusion method 'magic'" in err
    rc, _, err = run_main(capsys, ["reproduce", "--root", mmqa_root, "--models", "ViT-B-32"])
    assert rc == 2 and "expected NAME:TAG" in err


def test_encoder_failures_are_counted_and_questions_dropped(
    tmp_path, mmqa_standin, tiny_clip, capsys
):
    """A corrupt gold image: counted per reason, dropped, and its single-gold question too."""
    root = tmp_path / "corrupt"
    shutil.copytree(mmqa_standin.root, root)
    data = load_mmqa(root)
    gold_use: dict[str, int] = {}
    for q in data.queries:
        for g in q.gold_ids:
            gold_use[g] = gold_use.get(g, 0) + 1
    victim_q = next(
        q
        for q in data.queries
        if q.gold_modality == "image" and len(q.gold_ids) == 1 and gold_use[q.gold_ids[0]] == 1
    )
    data.images[victim_q.gold_ids[0]].path.write_text("not an image at all")

    out_json = tmp_path / "c.json"
    rc, out, err = run_main(
        capsys,
        [
            "reproduce",
            "--root",
            root,
            *_model_args(tiny_clip),
            "--no-progress",
            "--limit",
            "200",
            "--json",
            out_json,
        ],
    )
    assert rc == 0, err
    assert (root / ".mmgap-cache").is_dir()  # default cache dir: inside a writable dataset root
    reason = "image: not a recognised image file (PIL cannot identify its format)"
    assert f"encoder skipped: 1 {reason}" in out
    assert "questions dropped: 1 all gold items dropped by the encoder" in out
    _, model = _only_model(json.loads(out_json.read_text()))
    assert model["stats"]["skipped"] == {reason: 1}
    assert model["stats"]["dropped_queries"] == {"all gold items dropped by the encoder": 1}
    counts = data.modality_counts()
    assert model["stats"]["query_counts"] == {"text": counts["text"], "image": counts["image"] - 1}
    assert model["stats"]["corpus_modalities"]["image"] == len(data.images) - 1


def test_caption_baseline_metadata(tmp_path, mmqa_root, tiny_clip, tiny_encoder, capsys):
    out_json = tmp_path / "cap.json"
    rc, out, err = run_main(
        capsys,
        [
            "reproduce",
            "--root",
            mmqa_root,
            *_model_args(tiny_clip),
            "--caption-baseline",
            "metadata",
            "--limit",
            "10",
            "--cache-dir",
            tmp_path / "c",
            "--json",
            out_json,
            "--no-progress",
        ],
    )
    assert rc == 0, err
    assert any(line.startswith(CAPTION_METHOD + " ") for line in out.splitlines())
    _, model = _only_model(json.loads(out_json.read_text()))
    data = limit_dataset(load_mmqa(mmqa_root), 10)
    info = model["stats"]["caption_baseline"]
    assert info["captioner"] == "metadata" and info["captioned"] == len(data.images)

    # by hand: images become their title, embedded as text; rank each pool by raw cosine
    titles = {i: ref.title.strip() for i, ref in data.images.items()}
    hand = _hand_raw_recall(tiny_encoder, data, 5, image_texts=titles)
    for subset in ("text", "image"):
        assert result_value(model, CAPTION_METHOD, subset, "recall@5") == pytest.approx(
            hand[subset], abs=1e-6
        )


# ----------------------------------------------------------------------------------- Python API


def test_python_api_pluggable_captioner_and_limit(tmp_path, mmqa_root, tiny_encoder):
    data = load_mmqa(mmqa_root)
    first_image = next(iter(data.images))

    class Picky:
        """Fails on one image: that image is left out of the baseline and counted."""

        name = "picky"

        def caption(self, images):
            return ["" if ref.id == first_image else f"a photo of {ref.title}" for ref in images]

    report = reproduce(
        data,
        [tiny_encoder],
        methods=["raw", "standardize"],
        ks=(1, 5),
        cache_dir=tmp_path / "c",
        captioner=Picky(),
        progress=False,
        limit=5,
    )
    assert isinstance(report, ReproduceReport)
    result = report.models[tiny_encoder.model_id]
    assert result.query_counts == {"text": 5, "image": 5}
    assert result.caption_baseline["captioner"] == "picky"
    assert result.caption_baseline["skipped"] == {
        "caption: captioner returned an empty caption for image": 1
    }
    methods = {r["method"] for r in report.to_json()["models"][tiny_encoder.model_id]["results"]}
    assert methods == {"raw", "standardize", CAPTION_METHOD}
    assert "R@5" in report.table() and report.gain_k == 5
    path = report.write_csv(tmp_path / "out" / "r.csv")
    assert path.read_text().startswith("model,method,subset,metric,value\n")
    # the global pool with the stock MetadataCaptioner (image titles as captions)
    global_data = load_mmqa(mmqa_root, pool="global")
    report = reproduce(
        global_data,
        tiny_encoder,
        methods="raw",
        ks=(1, 10),
        cache_dir=tmp_path / "c",
        captioner=MetadataCaptioner(),
        progress=False,
        limit=4,
    )
    result = report.models[tiny_encoder.model_id]
    assert result.corpus_counts == {
        "text": len(global_data.texts),
        "image": len(global_data.images),
    }
    assert result.caption_baseline["captioned"] == len(global_data.images)
    for subset in ("text", "image"):
        assert 0.0 <= result.value(CAPTION_METHOD, subset, "recall@10") <= 1.0
    with pytest.raises(ValueError, match="pool 'context' needs"):
        reproduce(global_data, [tiny_encoder], pool="context", cache_dir=None)


def test_limit_dataset_keeps_first_questions_per_modality(mmqa_root):
    data = load_mmqa(mmqa_root)
    small = limit_dataset(data, 3)
    assert small.modality_counts() == {"text": 3, "image": 3}
    assert small.queries == [q for q in data.queries if q in small.queries]
    used = {i for q in small.queries for i in q.pool_ids}
    assert set(small.texts) | set(small.images) == used
    assert (
        limit_dataset(load_mmqa(mmqa_root, pool="global"), 2).images
        == load_mmqa(mmqa_root, pool="global").images
    )
    with pytest.raises(ValueError, match="positive"):
        limit_dataset(data, 0)


def test_context_candidates_sorts_each_pool_by_cosine():
    corpus = np.array([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6], [-1, 0]], dtype=np.float32)
    labels = np.array(["text", "text", "image", "image", "image"])
    queries = np.array([[1, 0], [0, 1]], dtype=np.float32)
    topk = context_candidates(queries, corpus, labels, [[0, 1, 2, 3, 4], [2, 1]])
    assert topk.modalities == ["text", "image"]
    ids, scores = topk.of("image")
    assert ids.tolist() == [[3, 2, 4], [2, -1, -1]]
    assert scores[0].tolist() == pytest.approx([0.8, 0.0, -1.0])
    assert np.isneginf(scores[1, 1:]).all()
    ids, _ = topk.of("text")
    assert ids.tolist() == [[0, 1, -1], [1, -1, -1]]


def test_gain_prints_na_when_raw_is_zero():
    results = []
    for method, value in (("raw", 0.0), ("standardize", 0.25)):
        for subset in ("text", "image"):
            results.append(
                {"method": method, "subset": subset, "metric": "recall@20", "value": value, "n": 4}
            )
    report = EvalReport(results=results, stats={}, ks=(20,))
    result = ModelResult(
        "m",
        "m",
        report,
        collections.Counter(),
        collections.Counter(),
        {"text": 4, "image": 4},
        {"text": 10, "image": 10},
        0,
        0,
        0.0,
    )
    rep = ReproduceReport(
        {"name": "mmqa", "split": "dev"},
        {"m": result, "m2": result},
        {},
        (20,),
        ["raw", "standardize"],
        "context",
    )
    text = rep.table()
    assert "(R@20, gold = image): n/a (raw 0.000 -> standardized 0.250, absolute +0.250)" in text
    row = next(line for line in text.splitlines() if line.startswith("m2 "))
    assert row.split()[-2:] == ["n/a", "+0.250"]
    assert result.gain(20)["relative"] is None


def test_specs_reasons_and_cache_dir(tmp_path, monkeypatch):
    assert parse_model_specs("ViT-B-32:openai, RN50:yfcc15m") == [
        ModelSpec("ViT-B-32", "openai"),
        ModelSpec("RN50", "yfcc15m"),
    ]
    spec = ModelSpec.parse("mmgap-tiny:/x/ckpt.pt", model_config=tmp_path / "mmgap-tiny.json")
    assert (
        spec.model_config == str(tmp_path / "mmgap-tiny.json")
        and spec.label == "mmgap-tiny:/x/ckpt.pt"
    )
    assert (
        ModelSpec.parse("ViT-B-32:openai", model_config=tmp_path / "mmgap-tiny.json").model_config
        is None
    )
    with pytest.raises(ValueError, match="NAME:TAG"):
        ModelSpec.parse("ViT-B-32")
    assert reason_category("file not found: '/data/x.jpg'") == "file not found"
    assert (
        reason_category("corrupt or truncated image '/a.jpg': OSError: broken")
        == "corrupt or truncated image"
    )
    assert default_cache_dir(tmp_path) == tmp_path / ".mmgap-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir(tmp_path / "missing") == tmp_path / "xdg" / "mmgap"


def test_corrupt_cache_file_is_ignored(tmp_path, mmqa_root, tiny_encoder):
    data = limit_dataset(load_mmqa(mmqa_root), 2)
    first = reproduce(data, tiny_encoder, methods="raw", cache_dir=tmp_path / "c", progress=False)
    for path in (tmp_path / "c").rglob("*.npz"):
        path.write_bytes(gzip.compress(b"garbage"))
    messages: list[str] = []
    second = reproduce(
        data,
        tiny_encoder,
        methods="raw",
        cache_dir=tmp_path / "c",
        progress=False,
        log=messages.append,
    )
    result = second.models[tiny_encoder.model_id]
    assert result.n_embedded > 0 and any("ignoring unreadable cache file" in m for m in messages)
    key = tiny_encoder.model_id
    assert second.to_json()["models"][key]["results"] == first.to_json()["models"][key]["results"]
