"""`mmgap reproduce --dataset mixbench` end to end with the tiny checkpoint: the head-to-head table,
the per-kind split, numbers checked by hand, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _fixtures_clip import model_args
from _fixtures_data import (
    MIXBENCH_SUBSET,
    mixbench_records,
    result_value,
    run_main,
    write_mixbench,
)
from mmgap_core import fusion
from mmgap_core.datasets import load_mixbench
from mmgap_core.reproduce import reproduce

HEAD_TO_HEAD = ["raw", "center", "grclip", "standardize"]


def _mixbench_args(root, tiny_clip, *extra) -> list[str]:
    return [
        "reproduce",
        "--dataset",
        "mixbench",
        "--subset",
        MIXBENCH_SUBSET,
        "--root",
        str(root),
        *model_args(tiny_clip, "--device", "cpu"),
        "--no-progress",
        *map(str, extra),
    ]


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _hand_ndcg10(encoder, data, *, alpha=0.5, grclip=False) -> dict[str, float]:
    """nDCG@10 per gold kind over the whole corpus, by hand (one relevant item per query)."""
    texts, images, docs = list(data.texts), list(data.images), list(data.documents)
    vec = {}
    tv = encoder.embed_texts([data.texts[i] for i in texts], strict=True).vectors
    iv = encoder.embed_images([str(data.images[i].path) for i in images], strict=True).vectors
    dt = encoder.embed_texts([data.documents[i].text for i in docs], strict=True).vectors
    di = encoder.embed_images(
        [str(data.documents[i].image.path) for i in docs], strict=True
    ).vectors
    dv = _unit(alpha * _unit(dt) + (1 - alpha) * _unit(di))
    qv = _unit(encoder.embed_texts([q.text for q in data.queries], strict=True).vectors)
    kinds = {"text": _unit(tv), "image": _unit(iv), "multimodal": dv}
    if grclip:
        qv = _unit(qv - qv.mean(axis=0))
        kinds = {k: _unit(v - v.mean(axis=0)) for k, v in kinds.items()}
    for ids, k in ((texts, "text"), (images, "image"), (docs, "multimodal")):
        vec.update(zip(ids, kinds[k]))
    ids = list(vec)
    matrix = np.stack([vec[i] for i in ids])
    per: dict[str, list[float]] = {"all": []}
    for q, v in zip(data.queries, qv):
        scores = matrix @ v
        rank = int((scores > scores[ids.index(q.gold_ids[0])]).sum())
        gain = 1.0 / np.log2(rank + 2) if rank < 10 else 0.0
        per["all"].append(gain)
        per.setdefault(q.gold_modality, []).append(gain)
    return {k: float(np.mean(v)) for k, v in per.items()}


# ------------------------------------------------------------------------------- end to end


def test_installed_command_runs_mixbench_end_to_end(tmp_path, mixbench_root, tiny_clip):
    exe = Path(sys.executable).parent / "mmgap"
    if not exe.is_file():
        pytest.skip(f"the mmgap command is not installed next to {sys.executable}")
    out_json = tmp_path / "r.json"
    argv = _mixbench_args(
        mixbench_root, tiny_clip, "--cache-dir", tmp_path / "c", "--json", out_json
    )
    proc = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert (
        "mixbench MSCOCO (global pool): 12 queries (gold kind: 4 text, 4 image, 4 multimodal)"
        in out
    )
    assert "corpus kinds from: corpus.jsonl, seeded 1:1:1 (seed 42)" in out
    # the head-to-head: GR-CLIP's comparison plus mmgap's default, nDCG@10 by gold kind
    lines = out.splitlines()
    start = lines.index("head-to-head, nDCG@10 by gold kind (MixBench's headline metric)")
    assert lines[start + 1].split() == [
        "method",
        "all",
        "text",
        "image",
        "multimodal",
        "all",
        "vs",
        "raw",
    ]
    default = getattr(fusion, "DEFAULT_METHOD", None)
    expected = HEAD_TO_HEAD + ([default] if default and default not in HEAD_TO_HEAD else [])
    h2h = [line.split()[0] for line in lines[start + 2 : start + 2 + len(expected)]]
    assert h2h == expected
    if default:
        assert any(line.startswith(f"{default} (default)") for line in lines)
    assert any(line.startswith("GR-CLIP's published MixBench nDCG@10") for line in lines)
    assert "every method, by gold kind: nDCG@10 / R@1 / R@10" in out

    data = json.loads(out_json.read_text())
    assert data["settings"]["alpha"] == 0.5 and data["settings"]["kinds"] == [
        "text",
        "image",
        "multimodal",
    ]
    assert data["dataset"]["corpus"] == {"text": 4, "image": 4, "multimodal": 4}
    (model,) = data["models"].values()
    assert model["stats"]["query_counts"] == {"text": 4, "image": 4, "multimodal": 4}
    assert {r["subset"] for r in model["results"]} == {"all", "text", "image", "multimodal"}
    assert set(expected) <= {r["method"] for r in model["results"]}
    assert set(fusion.METHOD_NAMES) <= {r["method"] for r in model["results"]}
    for m in expected:
        for subset in ("all", "text", "image", "multimodal"):
            assert 0.0 <= result_value(model, m, subset, "ndcg@10") <= 1.0
    assert any("grclip" in note for note in model["stats"]["notes"])


def test_numbers_match_a_hand_computation(mixbench_root, tiny_encoder):
    data = load_mixbench(mixbench_root, MIXBENCH_SUBSET)
    rep = reproduce(data, [tiny_encoder], methods="raw,grclip", cache_dir=None, progress=False)
    (result,) = rep.models.values()
    assert [r for r in rep.methods] == ["raw", "grclip"]
    for method, grclip in (("raw", False), ("grclip", True)):
        hand = _hand_ndcg10(tiny_encoder, data, grclip=grclip)
        for subset, want in hand.items():
            assert result.value(method, subset, "ndcg@10") == pytest.approx(want, abs=1e-6), (
                method,
                subset,
            )
    # alpha moves the multimodal documents: alpha 1 makes them their text
    rep1 = reproduce(data, [tiny_encoder], methods="raw", cache_dir=None, progress=False, alpha=1.0)
    (r1,) = rep1.models.values()
    hand1 = _hand_ndcg10(tiny_encoder, data, alpha=1.0)
    assert r1.value("raw", "multimodal", "ndcg@10") == pytest.approx(hand1["multimodal"], abs=1e-6)
    assert rep1.to_json()["settings"]["alpha"] == 1.0


def test_parquet_mixed_corpus_run_and_undecodable_image(tmp_path, tiny_clip, capsys):
    recs = mixbench_records(12, mixed=True)
    root = write_mixbench(tmp_path / "mb", recs, fmt="parquet", skip_images=("img/008.png",))
    (root / MIXBENCH_SUBSET / "images" / "img" / "008.png").write_bytes(b"not an image")
    out_json = tmp_path / "r.json"
    rc, out, err = run_main(
        capsys, _mixbench_args(root, tiny_clip, "--no-cache", "--json", out_json)
    )
    assert rc == 0, err
    assert "corpus kinds from: mixed_corpus.parquet" in out
    data = json.loads(out_json.read_text())
    (model,) = data["models"].values()
    # c8's image cannot be decoded: the document is dropped by the encoder, and its question too
    assert model["stats"]["skipped"] == {
        "document image: not a recognised image file (PIL cannot identify its format)": 1
    }
    assert model["stats"]["dropped_queries"] == {"all gold items dropped by the encoder": 1}
    assert model["stats"]["query_counts"] == {"text": 4, "image": 4, "multimodal": 3}


# ------------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_or_a_skip(tmp_path, tiny_clip, capsys, monkeypatch):
    recs = mixbench_records(12)
    recs["corpus"][0]["image"] = "../../../etc/passwd"
    root = write_mixbench(
        tmp_path / "a", recs, extra_lines={"query": ["{oops"]}, skip_images=("img/001.png",)
    )
    rc, out, err = run_main(capsys, _mixbench_args(root, tiny_clip, "--no-cache"))
    assert rc == 0, err
    for line in (
        "1  malformed JSON line (query.jsonl)",
        "1  corpus item: image path outside the image folder",
        "1  corpus item: image file missing",
        "2  query without a relevant corpus item",
    ):
        assert line in out

    cases = [
        (["--pool", "context"], "no per-question pools"),
        (["--split", "dev"], "--split does not apply to MixBench"),
        (["--alpha", "1.5"], "--alpha: expected a number in [0, 1]"),
        (["--caption-baseline", "metadata"], "caption baseline covers text + image corpora only"),
        (["--methods", "raw,nope"], "unknown fusion method 'nope'"),
    ]
    for extra, message in cases:
        rc, out, err = run_main(capsys, _mixbench_args(root, tiny_clip, "--no-cache", *extra))
        assert rc == 2 and message in err, (extra, err)
        # one error line; the skips seen on the way are `note:` lines
        errors = [line for line in err.strip().splitlines() if not line.startswith("note:")]
        assert len(errors) == 1 and "Traceback" not in err, err

    argv = _mixbench_args(root, tiny_clip)
    argv.remove("--subset")
    argv.remove(MIXBENCH_SUBSET)
    rc, _, err = run_main(capsys, argv)
    assert rc == 2 and "--dataset mixbench needs --subset" in err

    (root / MIXBENCH_SUBSET / "corpus.jsonl").unlink()
    rc, _, err = run_main(capsys, _mixbench_args(root, tiny_clip))
    assert rc == 2 and "the corpus split (corpus.jsonl or .parquet) is missing" in err
    assert len(err.strip().splitlines()) == 1

    bad = write_mixbench(
        tmp_path / "b", mixbench_records(6), extra_lines={"qrel": ['{"corpus_id": "c1"}']}
    )
    rc, _, err = run_main(capsys, _mixbench_args(bad, tiny_clip))
    assert rc == 2 and "qrel.jsonl line 7: missing field 'query_id'" in err

    pq_root = write_mixbench(tmp_path / "c", mixbench_records(6), fmt="parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    rc, _, err = run_main(capsys, _mixbench_args(pq_root, tiny_clip))
    assert rc == 2 and 'pip install "mmgap[parquet]"' in err
    assert len(err.strip().splitlines()) == 1
