"""The store commands as a user meets them (issue 11, items 11-21; issue 9, items 4-5).

Most checks call ``mmgap_core.cli.main`` in-process; the ones about the real command (timing,
exit status, stderr) run the installed ``mmgap`` entry point with stdin closed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _fixtures_clip import make_tiny_checkpoint, model_args

from mmgap_core.cli import main
from mmgap_core.fusion import DEFAULT_METHOD, METHODS

MMGAP = Path(sys.executable).parent / "mmgap"
TEXTS = {
    "cat.txt": "A tabby cat sleeping on a windowsill.",
    "coffee.txt": "A cup of hot coffee on a saucer.",
    "astronaut.txt": "An astronaut in a white spacesuit.",
    "rocket.txt": "A red rocket on the launch pad.",
    "city.txt": "The city skyline at night.",
}


def run_mmgap(*argv, env=None, timeout=60) -> subprocess.CompletedProcess:
    """The installed ``mmgap`` command, stdin closed, offline."""
    if not MMGAP.exists():
        pytest.skip(f"the mmgap command is not installed next to {sys.executable}")
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run(
        [str(MMGAP), *map(str, argv)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_images) -> Path:
    """Texts, and images in two folders where two files share a name."""
    root = tmp_path_factory.mktemp("cli_corpus")
    for name, text in TEXTS.items():
        (root / "texts").mkdir(exist_ok=True)
        (root / "texts" / name).write_text(text, encoding="utf-8")
    for sub, images in (("a", sample_images[:4]), ("b", sample_images[4:])):
        (root / sub).mkdir()
        for p in images:
            shutil.copy(p, root / sub / p.name)
    from PIL import Image, ImageOps

    # a/astronaut.png and b/astronaut.png: the same name, other content (ids are content hashes)
    with Image.open(sample_images[0]) as img:
        ImageOps.mirror(img).save(root / "b" / sample_images[0].name)
    return root


def make_store(tmp_path, corpus, tiny, *, calibrate=True) -> list[str]:
    conn = ["--db", str(tmp_path / "db")]
    assert main(["index", str(corpus), "--quiet", *conn, *model_args(tiny)]) == 0
    if calibrate:
        assert main(["calibrate", *conn]) == 0
    return conn


# ---------------------------------------------------------------------------- 11: fail fast offline
def test_offline_store_commands_fail_fast_and_create_nothing(tmp_path, corpus):
    db = tmp_path / "db"
    for argv in (
        ["index", corpus, "--db", db],
        ["search", "a cat", "--db", db],
        ["calibrate", "--db", db],
        ["inspect", "--db", db],
    ):
        t0 = time.monotonic()
        res = run_mmgap(*argv)
        elapsed = time.monotonic() - t0
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr
        assert elapsed < 15, f"{argv[0]} took {elapsed:.1f} s"
        assert not db.exists(), f"{argv[0]} created the store"
    res = run_mmgap("index", corpus, "--db", db)
    assert "--pretrained PATH" in res.stderr and "HF_HUB_OFFLINE" in res.stderr


def test_offline_without_the_flag_fails_fast_too(tmp_path, corpus, monkeypatch, capsys):
    import mmgap_core.factory_checks as checks

    import mmgap_core.encoders.weights as weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub freezes HF_HUB_OFFLINE at import (CI sets it): offline mode must read as off
    monkeypatch.setattr(weights, "offline_mode", lambda: False)
    monkeypatch.setattr(checks, "_hub_unreachable", lambda: "huggingface.co cannot be reached")
    monkeypatch.setattr(checks, "_nothing_cached", lambda: True)
    assert main(["index", str(corpus), "--db", str(tmp_path / "db")]) == 2
    err = capsys.readouterr().err
    assert "--pretrained PATH" in err and "HF_HUB_OFFLINE=1" in err
    assert not (tmp_path / "db").exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["search", "x", "--db", str(tmp_path / "nope")]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1
    with pytest.raises(Exception, match="no store at"):
        main(["--debug", "search", "x", "--db", str(tmp_path / "nope")])
    with pytest.raises(Exception, match="no store at"):
        main(["search", "x", "--db", str(tmp_path / "nope"), "--debug"])


# ---------------------------------------------------------------------------- 12: no model loaded
@pytest.fixture
def no_model(monkeypatch):
    """Call it to make any later model load fail loudly."""
    import mmgap_core.factory as factory

    def boom(*a, **k):
        raise AssertionError("the model was loaded")

    return lambda: monkeypatch.setattr(factory, "build_encoder", boom)


def test_calibrate_and_inspect_load_no_model(tmp_path, corpus, tiny_clip, capsys, no_model):
    conn = make_store(tmp_path, corpus, tiny_clip, calibrate=False)
    no_model()
    capsys.readouterr()
    assert main(["calibrate", *conn]) == 0
    assert main(["inspect", "-k", "2", "--sample", "5", *conn]) == 0
    out = capsys.readouterr().out
    assert "top-2 modality share" in out and DEFAULT_METHOD in out


def test_errors_that_need_no_model_come_first(tmp_path, corpus, tiny_clip, capsys, no_model):
    conn = make_store(tmp_path, corpus, tiny_clip, calibrate=False)
    no_model()
    capsys.readouterr()
    assert main(["search", "a cat", *conn, *model_args(tiny_clip)]) == 2
    assert "not calibrated" in capsys.readouterr().err
    missing = tmp_path / "missing.png"
    assert main(["search", "--image", str(missing), *conn, *model_args(tiny_clip)]) == 2
    assert "query image not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 13: no stray stores
def test_missing_folders_and_stores_are_errors_not_creations(tmp_path, capsys):
    db = tmp_path / "db"
    for cmd in (["search", "a cat"], ["inspect"], ["calibrate"]):
        assert main([*cmd, "--db", str(db)]) == 2
        assert "no store at" in capsys.readouterr().err
        assert not db.exists()
    assert main(["index", str(tmp_path / "no-such-folder"), "--db", str(db)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not db.exists()


def test_a_misspelt_store_name_lists_the_stores(tmp_path, corpus, tiny_clip, capsys):
    conn = make_store(tmp_path, corpus, tiny_clip, calibrate=False)
    capsys.readouterr()
    assert main(["inspect", *conn, "--name", "mmgapp"]) == 2
    err = capsys.readouterr().err
    assert "no store named 'mmgapp'" in err and "mmgap" in err


# ---------------------------------------------------------------------------- 14: merging
def _query_modalities(conn, capsys) -> set[str]:
    capsys.readouterr()
    assert main(["inspect", "--sample", "2", "-k", "1", *conn]) == 0
    out = capsys.readouterr().out
    return {q for q in ("text", "image") if f"  {q} query -> " in out}


def test_partial_calibration_merges_unless_replace(tmp_path, corpus, tiny_clip, capsys):
    conn = make_store(tmp_path, corpus, tiny_clip)
    assert _query_modalities(conn, capsys) == {"text", "image"}
    queries = tmp_path / "q.txt"
    queries.write_text("a cat\na cup of coffee\na rocket\n", encoding="utf-8")
    assert main(["calibrate", "--queries", str(queries), *conn, *model_args(tiny_clip)]) == 0
    assert "kept the statistics of image queries" in capsys.readouterr().out
    assert _query_modalities(conn, capsys) == {"text", "image"}
    assert main(["calibrate", "--query-modalities", "image", *conn]) == 0
    assert _query_modalities(conn, capsys) == {"text", "image"}
    assert main(["search", "a cat", *conn, *model_args(tiny_clip)]) == 0  # text stats kept
    # every scale of the text queries is kept, the centred ones of two-view-z too
    assert main(["search", "a cat", "--method", "two-view-z", *conn, *model_args(tiny_clip)]) == 0
    assert main(["calibrate", "--query-modalities", "image", "--replace", *conn]) == 0
    assert _query_modalities(conn, capsys) == {"image"}


# ---------------------------------------------------------------------------- 15: model mismatch
def test_model_mismatch_advice_is_true_and_reset_recovers(tmp_path, corpus, tiny_clip, capsys):
    conn = make_store(tmp_path, corpus, tiny_clip)
    other = make_tiny_checkpoint(tiny_clip.config_path, tmp_path / "other.pt", seed=1)
    wrong = ["--model", tiny_clip.model_name, "--pretrained", str(other)]
    wrong += ["--model-config", str(tiny_clip.config_path)]
    capsys.readouterr()
    assert main(["search", "a cat", *conn, *wrong]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "use that model" in err and "another store" in err and "--name NEW" in err
    assert "recalibrate" not in err
    # The documented recovery: re-record the store's model (only for the same weights).
    assert main(["calibrate", "--reset", *conn, *wrong]) == 0
    assert "the store's model is now" in capsys.readouterr().out
    assert main(["search", "a cat", "-k", "2", *conn, *wrong]) == 0


def test_a_copy_of_the_checkpoint_under_another_name_works(tmp_path, corpus, tiny_clip, capsys):
    conn = make_store(tmp_path, corpus, tiny_clip)
    moved = tmp_path / "renamed-weights.bin"
    shutil.copy(tiny_clip.checkpoint_path, moved)
    args = ["--model", tiny_clip.model_name, "--pretrained", str(moved)]
    args += ["--model-config", str(tiny_clip.config_path)]
    assert main(["search", "a cat", "-k", "2", *conn, *args]) == 0


# ---------------------------------------------------------------------------- 16, 17: compare
@pytest.mark.parametrize("method", ["rrf", "two-view-z"])
def test_compare_uses_the_method_asked_for(tmp_path, corpus, tiny_clip, capsys, method):
    conn = make_store(tmp_path, corpus, tiny_clip)
    capsys.readouterr()
    argv = ["search", "a cat", "--compare", "--method", method, *conn, *model_args(tiny_clip)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"calibrated ranking: {method}" in out and METHODS[method].unit in out
    assert "standardize" not in out
    assert "raw cosine ranking (cosine)" in out


def test_a_record_from_before_the_default_searches_by_background_z(
    tmp_path, corpus, tiny_clip, capfd
):
    conn = make_store(tmp_path, corpus, tiny_clip)
    cal = tmp_path / "cal.json"
    assert main(["calibrate", "--export", str(cal), *conn]) == 0
    data = json.loads(cal.read_text())
    for key in ("centered_background_scale", "center_directions"):
        data.pop(key)  # as written before two-view-z existed
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert main(["calibrate", "--import", str(old), *conn]) == 0
    capfd.readouterr()
    assert main(["search", "a cat", "--compare", *conn, *model_args(tiny_clip)]) == 0
    out, err = capfd.readouterr()
    assert "calibrated ranking: background-z" in out
    assert "predates two-view-z" in out + err


def test_labels_tell_images_apart(tmp_path, corpus, tiny_clip, capsys):
    conn = make_store(tmp_path, corpus, tiny_clip)
    capsys.readouterr()
    image = corpus / "a" / "astronaut.png"
    argv = ["search", "--image", str(image), "-k", "20", "--method", "raw", *conn]
    assert main([*argv, "--compare", *model_args(tiny_clip)]) == 0
    out = capsys.readouterr().out
    assert "a/astronaut.png" in out and "b/astronaut.png" in out
    assert "coffee.jpg" in out and "/coffee.jpg" not in out  # unique names stay short
    assert main([*argv, *model_args(tiny_clip)]) == 0
    out = capsys.readouterr().out
    assert "a/astronaut.png" in out and "camera.png" in out


# ---------------------------------------------------------------------------- 18: growth note
def test_growth_note_prints_once_and_names_the_command(tmp_path, corpus, tiny_clip, capfd):
    conn = make_store(tmp_path, corpus, tiny_clip)
    more = tmp_path / "more"
    more.mkdir()
    for i in range(20):
        (more / f"t{i}.txt").write_text(f"another note number {i}", encoding="utf-8")
    assert main(["index", str(more), "--quiet", *conn, *model_args(tiny_clip)]) == 0
    capfd.readouterr()
    assert main(["search", "a cat", "--compare", *conn, *model_args(tiny_clip)]) == 0
    out, err = capfd.readouterr()
    notes = [ln for ln in (out + err).splitlines() if "grew" in ln]
    assert len(notes) == 1, out + err
    assert notes[0].startswith("note: ") and "`mmgap calibrate`" in notes[0]
    assert "UserWarning" not in out + err and "auto_recalibrate" not in out + err


# ---------------------------------------------------------------------------- 20: help
HELP_COMMANDS = ["eval", "bench", "index", "calibrate", "search", "inspect", "demo", "reproduce"]


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help_prints_each_default_once(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text
    for entry in _option_entries(text):
        assert entry.count("(default") <= 1, entry


def _option_entries(text: str) -> list[str]:
    """Each option's help entry: from its ``  -x`` line to the next option or blank line."""
    entries: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("-") and line.startswith("  "):
            entries.append(line)
        elif entries and line.strip() and line.startswith("      "):
            entries[-1] += " " + line.strip()
        elif not line.strip() and entries:
            entries.append("")
    return [e for e in entries if e]


@pytest.mark.parametrize("command", ["search", "inspect", "eval", "bench", "demo"])
def test_help_lists_every_method_with_the_default_marked(command, capsys):
    from mmgap_core.fusion import METHOD_NAMES

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for name in METHOD_NAMES:
        assert f"  {name} " in text and METHODS[name].summary in text
    default_line = next(ln for ln in text.splitlines() if ln.strip().startswith(DEFAULT_METHOD))
    assert "default" in default_line


def test_help_texts_exist(capsys):
    for command, needles in {
        "calibrate": ["pseudo-positives", "--replace", "--reset"],
        "inspect": ["without loading a model"],
        "index": ["--batch-size", "memory"],
        "demo": ["open_clip model name", "pretrained tag of --model"],
    }.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for needle in needles:
            assert needle in text, (command, needle)


# ---------------------------------------------------------------------------- 21: demo
def test_demo_is_reproducible_and_says_what_ran(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["demo", "-k", "3", "--method", "standardize"]) == 0
    first = capsys.readouterr().out
    assert main(["demo", "-k", "3", "--method", "standardize"]) == 0
    assert capsys.readouterr().out == first
    assert "calibrated ranking: standardize" in first
    assert METHODS["standardize"].unit in first and "cosine" in first
    assert "--pretrained PATH" in first  # how to run with real weights
    assert str(tempfile_root()) not in first  # no temporary path: runs print the same


def tempfile_root() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / "mmgap-demo-"


def test_demo_keep_prints_commands_that_work(tmp_path, tiny_clip, capsys):
    keep = tmp_path / "kept"
    assert main(["demo", "-k", "2", "--keep", str(keep), *model_args(tiny_clip)]) == 0
    out = capsys.readouterr().out
    commands = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("mmgap ")]
    assert len(commands) == 3 and all("--name demo" in c for c in commands)
    import shlex

    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
    assert (keep / "db").is_dir()


# ---------------------------------------------------------------------------- issue 9: default
def test_eval_and_bench_mark_the_default(tmp_path, capsys):
    assert main(["bench", "--profiles", "clip-like", "--methods", f"raw,{DEFAULT_METHOD}"]) == 0
    out = capsys.readouterr().out
    assert f"{DEFAULT_METHOD} *" in out and f"* {DEFAULT_METHOD}: the default method" in out


def test_eval_json_names_the_default_and_caps_the_pool(tmp_path, capsys):
    from mmgap_core.simulator import simulate

    files = simulate("clip-like").write(tmp_path / "sim")
    out_json = tmp_path / "o.json"
    argv = ["eval", "--queries", files["queries"], "--corpus", files["corpus"]]
    argv += ["--modality", files["modality"], "--qrels", files["qrels"]]
    argv += ["--pool", "1000000000", "--json", out_json, "--methods", "raw,standardize"]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "capped at" in out
    data = json.loads(out_json.read_text())
    assert data["stats"]["default_method"] == DEFAULT_METHOD


# ---------------------------------------------------------------------------- output plumbing
def test_output_into_a_closed_pipe_exits_quietly(tmp_path):
    if not MMGAP.exists():
        pytest.skip("the mmgap command is not installed")
    for argv in (["bench", "--list"], ["search", "--help"]):
        proc = subprocess.Popen(
            [str(MMGAP), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.stdout.close()  # the reader is gone before anything is written (`| head -0`)
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err and b"BrokenPipe" not in err, err
        assert proc.returncode in (0, 1)
