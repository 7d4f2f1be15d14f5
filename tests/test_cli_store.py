"""The store commands as a new user runs them: index scikit-image samples + text files with the
tiny model, calibrate, search, inspect; embedded and against a `chroma run` server. And `mmgap demo`
offline."""

from __future__ import annotations

import json
import shutil

import pytest
from _fixtures_clip import model_args

from mmgap_core.cli import main
from mmgap_core.fusion import DEFAULT_METHOD, METHODS

TEXTS = {
    "cat.txt": "A tabby cat sleeping on a windowsill.",
    "coffee.md": "# Coffee\nA cup of hot coffee on a saucer.",
    "astronaut.txt": "An astronaut in a white spacesuit.",
    "empty.txt": "   ",
}


@pytest.fixture
def corpus_dir(tmp_path, sample_images, bad_images):
    root = tmp_path / "corpus"
    (root / "images").mkdir(parents=True)
    (root / "texts").mkdir()
    for p in sample_images:
        shutil.copy(p, root / "images" / p.name)
    shutil.copy(bad_images["text_named_jpg"], root / "images" / "fake.jpg")
    for name, text in TEXTS.items():
        (root / "texts" / name).write_text(text, encoding="utf-8")
    (root / "texts" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "texts" / "more.jsonl").write_text(
        json.dumps({"text": "a red rocket on the launch pad", "tag": "space"}) + "\n{not json\n",
        encoding="utf-8",
    )
    return root


def _run_session(conn, corpus_dir, tiny_clip, capsys, tmp_path, n_images):
    model = model_args(tiny_clip)
    assert main(["index", str(corpus_dir), "--quiet", *conn, *model]) == 0
    out = capsys.readouterr().out
    assert f"added {n_images} image, 4 text; skipped 4" in out

    # The manifest records local files by name and hash only: later commands name them again.
    assert main(["index", str(corpus_dir), *conn, *model]) == 0
    out = capsys.readouterr().out
    assert "added nothing" in out and "already indexed" in out
    assert "empty text" in out and "not UTF-8" in out and "malformed JSON line" in out
    assert "fake.jpg" in out

    assert main(["search", "a cat", *conn, *model]) == 2
    assert "mmgap calibrate" in capsys.readouterr().err

    export = tmp_path / "cal.json"
    assert main(["calibrate", *conn, "--export", str(export)]) == 0
    out = capsys.readouterr().out
    assert "text query -> image: mean" in out and "gap for text queries" in out
    assert json.loads(export.read_text())["format"] == "mmgap.calibration"

    assert main(["search", "a cat sleeping", "-k", "5", *conn, *model]) == 0
    out = capsys.readouterr().out
    assert f"{DEFAULT_METHOD} ranking for a text query" in out and out.count("(cos ") == 5
    assert METHODS[DEFAULT_METHOD].unit in out

    assert main(["search", "a cat", "--compare", "-k", "4", *conn, *model]) == 0
    out = capsys.readouterr().out
    assert "raw cosine ranking" in out and "calibrated ranking" in out and "modality counts" in out
    assert f"calibrated ranking: {DEFAULT_METHOD}" in out

    image = next((corpus_dir / "images").glob("*.png"))
    assert main(["search", "--image", str(image), "-k", "3", "--json", *conn, *model]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["modality"] == "image" and hits[0]["raw_score"] == pytest.approx(1.0, abs=1e-4)
    assert {"id", "score", "raw_score", "modality", "text", "uri", "metadata", "rank"} <= set(
        hits[0]
    )

    plot = tmp_path / "gap.png"
    assert main(["inspect", "-k", "3", "--plot", str(plot), *conn]) == 0
    out = capsys.readouterr().out
    assert "top-3 modality share" in out and plot.stat().st_size > 5000

    assert main(["calibrate", "--import", str(export), *conn]) == 0
    assert "imported calibration" in capsys.readouterr().out


def test_cli_embedded_session(tmp_path, corpus_dir, tiny_clip, capsys, sample_images):
    conn = ["--db", str(tmp_path / "db")]
    _run_session(conn, corpus_dir, tiny_clip, capsys, tmp_path, len(sample_images))


@pytest.mark.server
def test_cli_server_session(tmp_path, corpus_dir, tiny_clip, capsys, chroma_server, sample_images):
    conn = ["--host", chroma_server.host, "--port", str(chroma_server.port), "--name", "clitest"]
    try:
        _run_session(conn, corpus_dir, tiny_clip, capsys, tmp_path, len(sample_images))
    finally:
        from mmgap_core.store.chroma import ChromaStore

        ChromaStore(chroma_server.client(), "clitest").delete_store()


def test_cli_errors(tmp_path, tiny_clip, capsys):
    assert main(["search", "   ", "--db", str(tmp_path / "db")]) == 2
    assert "empty query" in capsys.readouterr().err
    db = tmp_path / "db"
    assert main(["index", str(tmp_path / "nothing-here"), "--db", str(db), *model_args(tiny_clip)])
    assert "no such file or folder" in capsys.readouterr().err
    assert not db.exists()  # nothing is created for a failed command
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["index", str(empty), "--db", str(tmp_path / "db")]) == 2
    assert "nothing to index" in capsys.readouterr().err


def test_demo_runs_offline_with_simulator_fallback(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["demo", "-k", "5"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert "cannot be loaded here" in first and "simulator embeddings" in first
    assert "raw cosine ranking" in out and "calibrated ranking" in out
    assert "cross-modal queries with the relevant item in the top 10" in out


def test_demo_with_a_model_checkpoint(tiny_clip, capsys):
    assert main(["demo", "-k", "4", *model_args(tiny_clip)]) == 0
    out = capsys.readouterr().out
    assert "model open_clip:mmgap-tiny:file:" in out
    assert out.count("raw cosine ranking") == 4
