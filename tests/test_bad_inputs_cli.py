"""Bad input to the ``mmgap`` command: every case is one line on stderr and exit status 2.

Issues 10 and 11: no traceback, no hang, no store created by a failed command. Each case names
its arguments with ``{placeholders}`` filled from the ``world`` fixture (stores and files made
once for the module). Most cases run ``mmgap_core.cli.main`` in-process (fast); the ones marked
``EXE`` run the installed ``mmgap`` command with stdin closed and ``HF_HUB_OFFLINE=1``, so the
contract is checked through the real entry point too. Every case has a timeout.

Add cases to ``CASES`` over time; the count is reported in the closing note of issue 10.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mmgap_core.cli import main

MMGAP = Path(sys.executable).parent / "mmgap"
MODEL = "{MODEL}"  # expands into --model/--pretrained/--model-config of the tiny checkpoint
EXE_TIMEOUT = 60
CASE_TIMEOUT = 90  # in-process cases and the module's fixture (the first case builds the world)


@dataclass(frozen=True)
class Case:
    """One bad invocation: ``argv`` (with placeholders), a substring of the error, how to run."""

    id: str
    argv: tuple[str, ...]
    expect: str = ""
    exe: bool = False
    env: tuple[tuple[str, str], ...] = ()
    needs: str = ""  # "fifo", "nginx": skip with a reason where missing


def C(id, *argv, expect="", exe=False, env=(), needs=""):  # noqa: N802 - a table helper
    return Case(id, tuple(argv), expect, exe, tuple(env), needs)


CAL = ("--db", "{cal}")
UNCAL = ("--db", "{uncal}")
EMPTY = ("--db", "{empty}")
REMOTE = ("--host", "127.0.0.1", "--port", "{closed_port}")
EVAL = ("eval", "--queries", "{q}", "--corpus", "{c}", "--modality", "{m}", "--qrels", "{qrels}")

# fmt: off
CASES = [
    # -- usage errors: argparse, one line ------------------------------------------------------
    C("no-command"),
    C("unknown-command", "frobnicate", expect="invalid choice"),
    C("unknown-flag", "search", "x", "--bogus", expect="unrecognized arguments"),
    C("search-k-zero", "search", "x", "-k", "0", expect="positive integer"),
    C("search-k-negative", "search", "x", "-k", "-3"),
    C("search-k-text", "search", "x", "-k", "ten", expect="positive integer", exe=True),
    C("kpm-zero", "search", "x", "--k-per-modality", "0", expect="positive integer"),
    C("kpm-negative", "search", "x", "--k-per-modality", "-1"),
    C("method-unknown", "search", "x", "--method", "bogus", expect="invalid choice"),
    C("method-gold", "search", "x", "--method", "standardize-gold", expect="invalid choice"),
    C("method-empty", "search", "x", "--method", "", expect="invalid choice"),
    C("compare-and-json", "search", "x", "--compare", "--json", expect="not allowed"),
    C("port-text", "search", "x", "--host", "h", "--port", "eighty", expect="invalid int"),
    C("auth-unknown", "search", "x", "--auth", "oauth", expect="invalid choice"),
    C("token-header-unknown", "search", "x", "--token-header", "X-Foo", expect="invalid choice"),
    C("ca-and-insecure", "search", "x", "--ca-bundle", "a", "--insecure", expect="not allowed"),
    C("index-no-paths", "index", expect="required"),
    C("index-batch-zero", "index", "{textdir}", "--batch-size", "0", expect="positive integer"),
    C("index-batch-negative", "index", "{textdir}", "--batch-size", "-64"),
    C("index-batch-text", "index", "{textdir}", "--batch-size", "many"),
    C("calibrate-sample-zero", "calibrate", "--sample", "0", expect="positive integer"),
    C("calibrate-sample-negative", "calibrate", "--sample", "-1"),
    C("calibrate-sample-text", "calibrate", "--sample", "all"),
    C("inspect-k-zero", "inspect", "-k", "0", expect="positive integer"),
    C("inspect-sample-negative", "inspect", "--sample", "-5"),
    C("inspect-method-unknown", "inspect", "--method", "best", expect="invalid choice"),
    C("eval-missing-required", "eval", "--queries", "q.npy", expect="required", exe=True),
    C("eval-pool-zero", *EVAL, "--pool", "0", expect="positive integer"),
    C("eval-pool-text", *EVAL, "--pool", "lots"),
    C("demo-k-zero", "demo", "-k", "0", expect="positive integer"),
    C("demo-method-unknown", "demo", "--method", "nope", expect="invalid choice"),
    C("bench-profiles-no-value", "bench", "--profiles", expect="expected one argument"),
    C("reproduce-no-root", "reproduce", expect="required"),
    C("debug-after-bad-flag", "search", "--debug", "--frob", expect="unrecognized"),
    # -- query checks: before any store or model ------------------------------------------------
    C("query-none", "search", *CAL, expect="exactly one"),
    C("query-and-image", "search", "x", "--image", "{png}", *CAL, expect="exactly one"),
    C("query-blank", "search", "   ", *CAL, expect="empty query"),
    C("query-empty", "search", "", *CAL, expect="empty query"),
    C("image-missing", "search", "--image", "{missing_png}", *CAL, expect="not found", exe=True),
    C("image-folder", "search", "--image", "{emptydir}", *CAL, expect="not a regular file"),
    C("image-fifo", "search", "--image", "{fifo}", *CAL, expect="not a regular file", needs="fifo"),
    C("image-dev-zero", "search", "--image", "/dev/zero", *CAL, expect="not a regular file"),
    C("where-list", "search", "x", "--where", "[1,2]", *CAL, expect="JSON object", exe=True),
    C("where-bad-json", "search", "x", "--where", "{bad", *CAL, expect="not valid JSON"),
    C("where-empty-object", "search", "x", "--where", "{}", *CAL, expect="empty object"),
    C("where-string", "search", "x", "--where", '"a"', *CAL, expect="JSON object"),
    C("where-number", "search", "x", "--where", "12", *CAL, expect="JSON object"),
    C("where-null", "search", "x", "--where", "null", *CAL, expect="JSON object"),
    C("where-deep", "search", "x", "--where", "[" * 100000 + "]" * 100000, *CAL),
    # -- where the store is ---------------------------------------------------------------------
    C("search-db-missing", "search", "x", "--db", "{nowhere}", expect="no store at", exe=True),
    C("calibrate-db-missing", "calibrate", "--db", "{nowhere}", expect="no store at"),
    C("inspect-db-missing", "inspect", "--db", "{nowhere}", expect="no store at"),
    C("search-db-file", "search", "x", "--db", "{textfile}", expect="is a file", exe=True),
    C("calibrate-db-file", "calibrate", "--db", "{textfile}", expect="is a file"),
    C("inspect-db-file", "inspect", "--db", "{textfile}", expect="is a file"),
    C("index-db-file", "index", "{textdir}", "--db", "{textfile}", MODEL, expect="is a file"),
    C("index-db-under-file", "index", "{textdir}", "--db", "{textfile}/db", MODEL,
      expect="not a folder"),
    C("index-db-data-folder", "index", "{textdir}", "--db", "{textdir}", MODEL, expect="other"),
    C("search-db-empty-folder", "search", "x", "--db", "{emptydir}", expect="not a Chroma store"),
    C("inspect-db-empty-folder", "inspect", "--db", "{emptydir}", expect="not a Chroma store"),
    C("calibrate-db-data-folder", "calibrate", "--db", "{textdir}", expect="not a Chroma store"),
    C("name-wrong", "inspect", *CAL, "--name", "mmgapp", expect="no store named"),
    C("name-invalid", "inspect", *CAL, "--name", "bad name!", expect="name"),
    C("name-empty", "inspect", *CAL, "--name", "", expect="name"),
    C("name-too-short", "inspect", *CAL, "--name", "a"),
    C("db-and-host", "search", "x", "--db", "d", "--host", "h", expect="not both"),
    C("host-and-cloud", "search", "x", "--host", "h", "--cloud", expect="not both"),
    C("ssl-embedded", "search", "x", *CAL, "--ssl", expect="--ssl: only for a Chroma server"),
    C("auth-embedded", "search", "x", *CAL, "--auth", "token", expect="--auth: only"),
    C("tenant-embedded", "inspect", *CAL, "--tenant", "t", expect="--tenant: only"),
    C("header-embedded", "inspect", *CAL, "--header", "A=b", expect="--header: only"),
    C("port-embedded", "inspect", *CAL, "--port", "8000", expect="--port: only"),
    C("ca-bundle-embedded", "inspect", *CAL, "--ca-bundle", "{textfile}", expect="only"),
    C("token-header-embedded", "inspect", *CAL, "--token-header", "X-Chroma-Token"),
    C("port-zero", "inspect", "--host", "127.0.0.1", "--port", "0", expect="port"),
    C("port-too-big", "inspect", "--host", "127.0.0.1", "--port", "70000", expect="port"),
    C("host-with-space", "inspect", "--host", "bad host", expect="host"),
    C("server-down", "inspect", *REMOTE, expect="unavailable", exe=True),
    C("server-down-search", "search", "x", *REMOTE, expect="unavailable"),
    C("server-down-index", "index", "{textdir}", *REMOTE, MODEL, expect="unavailable"),
    C("header-no-equals", "inspect", *REMOTE, "--header", "NoValue", expect="NAME=VALUE"),
    C("header-bad-name", "inspect", *REMOTE, "--header", "Bad Name=v", expect="header name"),
    C("header-env-bad-var", "inspect", *REMOTE, "--header-env", "X-K=not valid", expect="environ"),
    C("header-env-unset", "inspect", *REMOTE, "--header-env", "X-K=MMGAP_TEST_UNSET",
      expect="MMGAP_TEST_UNSET"),
    C("auth-env-without-auth", "inspect", *REMOTE, "--auth-env", "TOK", expect="--auth token"),
    C("basic-user-with-token", "inspect", *REMOTE, "--auth", "token", "--basic-user", "u",
      expect="--auth basic"),
    C("auth-env-invalid-name", "inspect", *REMOTE, "--auth", "token", "--auth-env", "1BAD"),
    C("token-missing", "inspect", *REMOTE, "--auth", "token", expect="MMGAP_CHROMA_TOKEN"),
    C("basic-missing", "inspect", *REMOTE, "--auth", "basic", expect="MMGAP_CHROMA_BASIC_AUTH"),
    C("basic-without-colon", "inspect", *REMOTE, "--auth", "basic", expect="user:password",
      env=(("MMGAP_CHROMA_BASIC_AUTH", "justapassword"),)),
    C("ca-bundle-missing", "inspect", *REMOTE, "--ca-bundle", "{nowhere}", expect="does not exist"),
    C("ca-bundle-not-pem", "inspect", *REMOTE, "--ca-bundle", "{textfile}", expect="PEM"),
    C("cloud-no-key", "inspect", "--cloud", expect="CHROMA_API_KEY", exe=True),
    C("cloud-basic", "inspect", "--cloud", "--auth", "basic", expect="API key"),
    # -- the model ------------------------------------------------------------------------------
    C("store-needs-pretrained", "search", "x", *CAL, expect="--pretrained PATH", exe=True),
    C("index-needs-pretrained", "index", "{textdir}", *CAL, expect="--pretrained PATH"),
    C("new-store-offline", "index", "{textdir}", "--db", "{newdb}", expect="HF_HUB_OFFLINE"),
    C("pretrained-missing-file", "index", "{textdir}", "--db", "{newdb}", "--pretrained",
      "{nowhere}", expect="does not exist"),
    C("pretrained-folder", "index", "{textdir}", "--db", "{newdb}", "--pretrained", "{emptydir}",
      expect="is a folder"),
    C("pretrained-not-checkpoint", "search", "x", *CAL, "--model", "mmgap-tiny", "--model-config",
      "{tiny_config}", "--pretrained", "{garbage_pt}", expect="cannot load", exe=True),
    C("pretrained-random-bytes", "index", "{textdir}", "--db", "{newdb}", "--model", "mmgap-tiny",
      "--model-config", "{tiny_config}", "--pretrained", "{random_pt}", expect="cannot load"),
    C("model-unknown", "index", "{textdir}", "--db", "{newdb}", "--model", "ViT-Q-99",
      "--pretrained", "{tiny_pt}", expect="ViT-Q-99"),
    C("model-config-missing", "index", "{textdir}", "--db", "{newdb}", "--model", "mmgap-tiny",
      "--model-config", "{nowhere}", "--pretrained", "{tiny_pt}", expect="not found"),
    C("manifest-names-garbage", "search", "x", "--db", "{badmanifest}", "--method", "raw",
      expect="cannot load"),
    C("model-mismatch", "search", "x", *CAL, "--model", "mmgap-tiny", "--model-config",
      "{tiny_config}", "--pretrained", "{other_pt}", expect="use that model"),
    C("device-unknown", "search", "x", *CAL, MODEL, "--device", "tpu9", expect="device"),
    C("device-absent", "search", "x", *CAL, MODEL, "--device", "cuda:7", expect="device"),
    # -- what the store holds -------------------------------------------------------------------
    C("search-empty-store", "search", "x", *EMPTY, MODEL, expect="empty"),
    C("search-not-calibrated", "search", "x", *UNCAL, MODEL, expect="mmgap calibrate", exe=True),
    C("compare-not-calibrated", "search", "x", "--compare", *UNCAL, MODEL, expect="calibrate"),
    C("calibrate-empty-store", "calibrate", *EMPTY, expect="empty"),
    C("calibrate-unknown-modality", "calibrate", *CAL, "--query-modalities", "audio",
      expect="audio"),
    C("calibrate-blank-modality", "calibrate", *CAL, "--query-modalities", ",,"),
    C("calibrate-queries-missing", "calibrate", *CAL, "--queries", "{nowhere}", expect="not found"),
    C("calibrate-queries-folder", "calibrate", *CAL, "--queries", "{emptydir}"),
    C("calibrate-queries-blank-line", "calibrate", *CAL, "--queries", "{blank_lines}"),
    C("calibrate-queries-latin1", "calibrate", *CAL, "--queries", "{latin1}", expect="UTF-8"),
    C("calibrate-queries-image-modality", "calibrate", *CAL, "--queries", "{textfile}",
      "--query-modalities", "image", expect="text"),
    C("import-missing", "calibrate", *CAL, "--import", "{nowhere}"),
    C("import-folder", "calibrate", *CAL, "--import", "{emptydir}"),
    C("import-not-json", "calibrate", *CAL, "--import", "{textfile}", exe=True),
    C("import-empty-file", "calibrate", *CAL, "--import", "{zero_png}"),
    C("import-garbage-sizes", "calibrate", *CAL, "--import", "{cal_garbage_sizes}"),
    C("import-no-standardizer", "calibrate", *CAL, "--import", "{cal_no_std}"),
    C("import-count-inf", "calibrate", *CAL, "--import", "{cal_count_inf}"),
    C("import-deep-json", "calibrate", *CAL, "--import", "{cal_deep}"),
    C("import-null-model", "calibrate", *CAL, "--import", "{cal_null_model}"),
    C("import-other-model", "calibrate", *CAL, "--import", "{cal_other_model}",
      expect="fit one with `mmgap calibrate`"),
    C("import-list", "calibrate", *CAL, "--import", "{cal_list}"),
    C("import-and-queries", "calibrate", *CAL, "--import", "{cal_good}", "--queries", "{textfile}"),
    C("import-and-reset", "calibrate", *CAL, "--import", "{cal_good}", "--reset", expect="--reset"),
    C("export-to-folder", "calibrate", *CAL, "--export", "{emptydir}", expect="folder"),
    C("export-under-file", "calibrate", *CAL, "--export", "{textfile}/x.json",
      expect="not a folder"),
    C("reset-dimension", "calibrate", *CAL, "--reset", "--model", "mmgap-tiny64", "--model-config",
      "{tiny64_config}", "--pretrained", "{tiny64_pt}", expect="dimensional"),
    C("inspect-plot-folder", "inspect", *CAL, "--plot", "{emptydir}", expect="folder"),
    C("inspect-plot-suffix", "inspect", *CAL, "--plot", "{tmp}/gap.xyz", expect="image type"),
    C("inspect-plot-under-file", "inspect", *CAL, "--plot", "{textfile}/gap.png",
      expect="not a folder"),
    C("where-bad-operator", "search", "x", *CAL, MODEL, "--where", '{"$frob": 1}'),
    C("image-truncated", "search", "--image", "{truncated_jpg}", *CAL, MODEL),
    C("image-text-named-jpg", "search", "--image", "{text_jpg}", *CAL, MODEL),
    C("image-zero-bytes", "search", "--image", "{zero_png}", *CAL, MODEL),
    C("image-bomb", "search", "--image", "{bomb_png}", *CAL, MODEL),
    C("image-thin", "search", "--image", "{thin_png}", *CAL, MODEL),
    # -- index ----------------------------------------------------------------------------------
    C("index-missing-path", "index", "{nowhere}", "--db", "{newdb}", expect="no such", exe=True),
    C("index-some-missing", "index", "{textdir}", "{nowhere}", "--db", "{newdb}", expect="no such"),
    C("index-empty-folder", "index", "{emptydir}", "--db", "{newdb}", expect="nothing to index"),
    # -- eval -----------------------------------------------------------------------------------
    C("eval-queries-missing", *EVAL[:2], "{nowhere}", *EVAL[3:], expect="not found"),
    C("eval-corpus-not-npy", *EVAL[:4], "{textfile}", *EVAL[5:], expect=".npy"),
    C("eval-corpus-folder", *EVAL[:4], "{emptydir}", *EVAL[5:]),
    C("eval-qrels-missing", *EVAL[:-1], "{nowhere}"),
    C("eval-qrels-latin1", *EVAL[:-1], "{latin1}"),
    C("eval-json-folder", *EVAL, "--json", "{emptydir}", expect="folder", exe=True),
    C("eval-json-under-file", *EVAL, "--json", "{textfile}/o.json", expect="not a folder"),
    C("eval-query-modality-audio", *EVAL, "--query-modality", "audio", expect="audio"),
    C("eval-methods-unknown", *EVAL, "--methods", "raw,best", expect="unknown fusion method"),
    C("eval-methods-empty", *EVAL, "--methods", ",", expect="fusion method"),
    C("eval-k-zero", *EVAL, "--k", "0", expect="positive"),
    C("eval-k-text", *EVAL, "--k", "a,b"),
    C("eval-k-huge", *EVAL, "--k", "1000000000", expect="corpus size"),
    C("eval-pool-below-k", *EVAL, "--pool", "1", "--k", "1,2", expect="--pool"),
    C("eval-dim-mismatch", *EVAL[:2], "{q_wide}", *EVAL[3:], expect="dimension"),
    C("eval-labels-short", *EVAL[:6], "{m_short}", *EVAL[7:], expect="labels"),
    C("eval-labels-blank", *EVAL[:6], "{m_blank}", *EVAL[7:], expect="empty"),
    C("eval-corpus-nan", *EVAL[:4], "{c_nan}", *EVAL[5:], expect="NaN"),
    C("eval-calibration-missing", *EVAL, "--calibration-queries", "{nowhere}"),
    C("eval-query-ids-count", *EVAL, "--query-ids", "{one_id}", expect="ids"),
    C("eval-qrels-bad-line", *EVAL[:-1], "{qrels_bad}", expect="fields"),
    C("eval-corpus-pickle", *EVAL[:4], "{c_pickle}", *EVAL[5:]),
    C("eval-corpus-1d", *EVAL[:4], "{c_1d}", *EVAL[5:]),
    # -- bench, demo, reproduce -----------------------------------------------------------------
    C("bench-profile-unknown", "bench", "--profiles", "nope", expect="unknown simulator profile"),
    C("bench-methods-unknown", "bench", "--methods", "nope", expect="unknown fusion method"),
    C("bench-json-folder", "bench", "--json", "{emptydir}", expect="folder"),
    C("bench-json-under-file", "bench", "--json", "{textfile}/b.json", expect="not a folder"),
    C("bench-plot-suffix", "bench", "--plot", "{tmp}/b.xyz", expect="image type"),
    C("demo-keep-file", "demo", "--keep", "{textfile}", expect="is a file", exe=True),
    C("demo-keep-under-file", "demo", "--simulated", "--keep", "{textfile}/kept"),
    C("demo-not-checkpoint", "demo", "--model", "mmgap-tiny", "--model-config", "{tiny_config}",
      "--pretrained", "{garbage_pt}", expect="cannot load"),
    C("reproduce-root-missing", "reproduce", "--root", "{nowhere}"),
]
# fmt: on


# ------------------------------------------------------------------------------------ the world
class CaseTimeout(Exception):
    """A case ran past :data:`CASE_TIMEOUT` seconds: a hang."""


@pytest.fixture(autouse=True)
def _timeout():
    """Fail, not hang, a case that runs over ``CASE_TIMEOUT`` s (SIGALRM, where there is one)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout(f"the case ran over {CASE_TIMEOUT} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip, sample_images, bad_images) -> dict[str, str]:
    """Stores and files the cases name, made once."""
    from _fixtures_clip import TINY_CONFIG, make_tiny_checkpoint, write_png_1bit

    from mmgap_core.factory import open_store

    tmp = tmp_path_factory.mktemp("bad_inputs")
    w: dict[str, str] = {"tmp": str(tmp), "closed_port": str(_free_port())}
    w["tiny_pt"], w["tiny_config"] = str(tiny_clip.checkpoint_path), str(tiny_clip.config_path)
    model = ["--model", tiny_clip.model_name, "--pretrained", w["tiny_pt"]]
    model += ["--model-config", w["tiny_config"]]

    corpus = tmp / "corpus"
    corpus.mkdir()
    for p in sample_images[:4]:
        shutil.copy(p, corpus / p.name)
    for i, text in enumerate(["a cat", "a cup of coffee", "a rocket", "snow", "a city"]):
        (corpus / f"t{i}.txt").write_text(text, encoding="utf-8")
    for key, calibrate in (("cal", True), ("uncal", False)):
        db = tmp / key
        assert main(["index", str(corpus), "--quiet", "--db", str(db), *model]) == 0
        if calibrate:
            assert main(["calibrate", "--db", str(db), "--export", str(tmp / "cal.json")]) == 0
        w[key] = str(db)
    open_store(tmp / "empty", name="mmgap")
    w["empty"] = str(tmp / "empty")
    bad = tmp / "badmanifest"
    shutil.copytree(tmp / "uncal", bad)
    garbage = tmp / "garbage.pt"
    garbage.write_text("not a checkpoint\n")
    w["garbage_pt"] = str(garbage)
    open_store(bad).update_manifest(
        encoder={"kind": "open_clip", "model_name": tiny_clip.model_name,
                 "pretrained": str(garbage), "model_config": w["tiny_config"]},
    )  # fmt: skip
    w["badmanifest"] = str(bad)
    (tmp / "random.pt").write_bytes(os.urandom(4096))
    w["random_pt"] = str(tmp / "random.pt")
    w["other_pt"] = str(make_tiny_checkpoint(tiny_clip.config_path, tmp / "other.pt", seed=1))
    cfg64 = tmp / "mmgap-tiny64.json"
    cfg64.write_text(json.dumps({**TINY_CONFIG, "embed_dim": 64}))
    w["tiny64_config"] = str(cfg64)
    w["tiny64_pt"] = str(make_tiny_checkpoint(cfg64, tmp / "tiny64.pt", seed=0))

    w["nowhere"] = str(tmp / "does-not-exist")
    w["newdb"] = str(tmp / "newdb")
    (tmp / "empty-dir").mkdir()
    w["emptydir"] = str(tmp / "empty-dir")
    (tmp / "texts").mkdir()
    (tmp / "texts" / "a.txt").write_text("a note", encoding="utf-8")
    w["textdir"] = str(tmp / "texts")
    w["textfile"] = str(tmp / "texts" / "a.txt")
    (tmp / "blank.txt").write_text("a cat\n\na dog\n", encoding="utf-8")
    w["blank_lines"] = str(tmp / "blank.txt")
    (tmp / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    w["latin1"] = str(tmp / "latin1.txt")
    w["png"] = str(sample_images[0])
    w["missing_png"] = str(tmp / "missing.png")
    w["truncated_jpg"] = str(bad_images["truncated_jpeg"])
    w["text_jpg"] = str(bad_images["text_named_jpg"])
    w["bomb_png"] = str(bad_images["decompression_bomb"])
    (tmp / "zero.png").write_bytes(b"")
    w["zero_png"] = str(tmp / "zero.png")
    w["thin_png"] = str(write_png_1bit(tmp / "thin.png", 40000, 1))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp / "pipe.jpg")
        w["fifo"] = str(tmp / "pipe.jpg")

    _calibration_files(tmp, w)
    _eval_files(tmp, w)
    return w


def _calibration_files(tmp: Path, w: dict) -> None:
    good = json.loads((tmp / "cal.json").read_text())
    variants = {
        "cal_good": good,
        "cal_garbage_sizes": {**good, "corpus_sizes": "garbage"},
        "cal_no_std": {k: v for k, v in good.items() if k != "standardizer"},
        "cal_null_model": {
            **good,
            "model_id": "open_clip:other",
            "standardizer": {**good["standardizer"], "model_id": None, "dim": None},
        },
        "cal_other_model": {
            **good,
            "model_id": "open_clip:other",
            "standardizer": {**good["standardizer"], "model_id": "open_clip:other"},
            "background_scale": None,
            "centered_background_scale": None,
        },
        "cal_list": [good],
    }
    for key, data in variants.items():
        (tmp / f"{key}.json").write_text(json.dumps(data))
        w[key] = str(tmp / f"{key}.json")
    text = json.dumps(good).replace('"count": ', '"count": 1e999 , "x": ', 1)
    (tmp / "cal_inf.json").write_text(text)
    w["cal_count_inf"] = str(tmp / "cal_inf.json")
    (tmp / "cal_deep.json").write_text("[" * 200000 + "]" * 200000)
    w["cal_deep"] = str(tmp / "cal_deep.json")


def _eval_files(tmp: Path, w: dict) -> None:
    d = tmp / "eval"
    d.mkdir()
    corpus = np.array([[1, 0, 0], [0.9, 0.1, 0], [0.2, 1, 0], [0.25, 0.9, 0.3]], np.float32)
    queries = np.array([[1, 0.05, 0], [0.5, 0.6, 0.1]], np.float32)
    np.save(d / "q.npy", queries)
    np.save(d / "c.npy", corpus)
    (d / "m.txt").write_text("text\ntext\nimage\nimage\n")
    (d / "qrels.tsv").write_text("0 0 0 1\n1 0 3 1\n")
    np.save(d / "q_wide.npy", np.ones((2, 5), np.float32))
    (d / "m_short.txt").write_text("text\nimage\n")
    (d / "m_blank.txt").write_text("text\n \nimage\nimage\n")
    np.save(d / "c_nan.npy", np.full((4, 3), np.nan, np.float32))
    (d / "one_id.txt").write_text("qa\n")
    (d / "qrels_bad.tsv").write_text("0 0 0\n")
    np.save(d / "c_pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(d / "c_1d.npy", np.ones(3, np.float32))
    for f in d.iterdir():
        w[f.stem] = str(f)


# ------------------------------------------------------------------------------------ running
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _argv(case: Case, w: dict, tiny) -> list[str]:
    out: list[str] = []
    for a in case.argv:
        if a == MODEL:
            out += ["--model", tiny.model_name, "--pretrained", w["tiny_pt"]]
            out += ["--model-config", w["tiny_config"]]
        else:
            out.append(_PLACEHOLDER.sub(lambda m: w.get(m.group(1), m.group(0)), a))
    return out


def _skip_unmet(case: Case, w: dict) -> None:
    if case.needs == "fifo" and "fifo" not in w:
        pytest.skip("this platform has no FIFOs (os.mkfifo)")
    if case.exe and not MMGAP.exists():
        pytest.skip(f"the mmgap command is not installed next to {sys.executable}")


def _snapshot(w: dict) -> dict[str, bool]:
    return {k: Path(w[k]).exists() for k in ("newdb", "nowhere")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, world, tiny_clip, capsys, monkeypatch):
    _skip_unmet(case, world)
    argv = _argv(case, world, tiny_clip)
    before = _snapshot(world)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("MMGAP_CHROMA_TOKEN", "MMGAP_CHROMA_BASIC_AUTH", "CHROMA_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    if case.exe:
        res = subprocess.run(
            [str(MMGAP), *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=EXE_TIMEOUT,
            env=dict(os.environ),
        )
        rc, err = res.returncode, res.stderr
    else:
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code
        err = capsys.readouterr().err
    lines = err.splitlines()
    assert rc == 2, f"exit {rc}; stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert lines[0].startswith("mmgap"), lines[0]
    if case.expect:
        assert case.expect in lines[0], lines[0]
    assert _snapshot(world) == before, "a failed command created a store or folder"


def test_the_suite_is_large_enough():
    assert len(CASES) >= 100
    assert sum(c.exe for c in CASES) >= 10  # the real entry point, for a representative subset
    assert len({c.id for c in CASES}) == len(CASES)


def test_a_fifo_query_image_does_not_hang(world, capsys):
    if "fifo" not in world:
        pytest.skip("this platform has no FIFOs (os.mkfifo)")
    assert stat.S_ISFIFO(os.stat(world["fifo"]).st_mode)
