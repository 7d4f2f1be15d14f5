"""Bad input to ``mmgap index`` and ``engine.index``: each case gives a skip with a reason (naming
the file, or ``file:line``) or a one-line error. 0 tracebacks, 0 hangs, 0 stored items lost.

Most cases sit side by side in one folder indexed once (``hostile_run``), next to good items that
must all be stored; each case then checks its own reason. Cases that must end the run (a missing
path, a bad ``--alpha``) run on their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from _fixtures_clip import model_args, write_png_1bit
from mmgap_core import index_inputs
from mmgap_core.cli import main
from mmgap_core.engine import RetrievalEngine
from mmgap_core.store import ChromaStore

HANG_SECONDS = 120
GOOD_TEXTS = {"good.txt": "a good plain text", "notes/good.md": "# Good\nmarkdown text"}
# (case id, JSON line as written, reason words): one bad line each in catalog.jsonl
BAD_LINES = [
    ("reserved-modality", {"text": "a", "modality": "image"}, "'modality' is reserved"),
    (
        "reserved-chroma-document",
        {"text": "b", "chroma:document": "x"},
        "'chroma:document' is reserved",
    ),
    ("reserved-chroma-prefix", {"text": "c", "chroma:id": 1}, "'chroma:id' is reserved"),
    ("reserved-hash", {"text": "d", "#document": "x"}, "'#document' is reserved"),
    ("reserved-dollar", {"text": "e", "$and": 1}, "'$and' is reserved"),
    ("reserved-batch", {"text": "f", "mmgap_batch": "x"}, "'mmgap_batch' is reserved"),
    ("empty-key", {"text": "g", "": 1}, "metadata key '' is not a non-empty string"),
    ("list-value", {"text": "h", "tags": ["a", "b"]}, "'tags' is a list"),
    ("dict-value", {"text": "i", "dims": {"w": 1}}, "'dims' is a dict"),
    ("nan-value", '{"text": "j", "price": NaN}', "'price' is nan"),
    ("inf-value", '{"text": "k", "price": Infinity}', "'price' is inf"),
    ("minus-inf-value", '{"text": "l", "price": -Infinity}', "'price' is -inf"),
    ("overflow-float", '{"text": "m", "price": 1e999}', "'price' is inf"),
    ("int-over-64-bits", {"text": "n", "count": 2**64}, "does not fit a 64-bit integer"),
    ("huge-int-literal", '{"text": "o", "n": ' + "9" * 5000 + "}", "malformed JSON line"),
    ("malformed", "{not json", "malformed JSON line"),
    ("truncated-object", '{"text": "p"', "malformed JSON line"),
    ("top-level-array", "[1, 2]", "JSON line is a list, not an object"),
    ("top-level-string", '"just a string"', "JSON line is a str, not an object"),
    ("no-fields", {"title": "q"}, "no 'text' or 'image' field"),
    ("null-fields", {"text": None, "image": None}, "no 'text' or 'image' field"),
    ("text-number", {"text": 42}, "'text' is a int, not a string"),
    ("text-empty", {"text": ""}, "empty text"),
    ("text-blank", {"text": " \t\n "}, "empty text"),
    ("text-surrogate", '{"text": "bad \\ud800 text"}', "text is not valid Unicode"),
    ("meta-surrogate", '{"text": "r", "k": "\\udfff"}', "not valid Unicode"),
    ("image-number", {"image": 7}, "'image' is a int, not a file path"),
    ("image-url", {"image": "https://example.com/a.jpg"}, "is a URL"),
    ("image-data-uri", {"image": "data:image/png;base64,AAAA"}, "is a URL"),
    ("image-traversal", {"image": "../outside.png"}, "leads outside the indexed folder"),
    ("image-absolute-outside", {"image": "/etc/passwd"}, "leads outside the indexed folder"),
    ("image-missing", {"image": "img/missing.png"}, "file not found"),
    ("doc-image-missing", {"text": "s", "image": "img/missing.png"}, "image: file not found"),
    ("doc-text-empty", {"text": "  ", "image": "img/ok.png"}, "empty text"),
    ("doc-text-number", {"text": 3, "image": "img/ok.png"}, "'text' is a int"),
    ("doc-image-dir", {"text": "t", "image": "img"}, "not a regular file"),
    ("doc-image-empty-file", {"text": "u", "image": "docimg/empty.png"}, "empty file"),
    ("doc-image-not-an-image", {"text": "v", "image": "docimg/fake.png"}, "not a recognised"),
    ("doc-image-thin", {"text": "w", "image": "docimg/thin.png"}, "image too thin or too wide"),
    ("doc-image-nul", {"text": "x", "image": "img/a\u0000b.png"}, "is not a file path"),
    ("deeply-nested", '{"text": "y", "a": ' + "[" * 100000 + "]" * 100000 + "}", "malformed JSON"),
    ("not-utf8", b'{"text": "caf\xe9"}', "malformed JSON line"),
    ("too-long-line", '{"text": "' + "z" * 400_000 + '"}', "line longer than"),
    ("duplicate-line", {"text": "a good jsonl text"}, "duplicate of"),
]
# (case id, file name under the folder, reason words)
BAD_FILES = [
    ("empty-png", "img/empty.png", "empty file"),
    ("second-empty-png", "img/empty2.png", "empty file"),
    ("fifo-jpg", "special/pipe.jpg", "FIFO"),
    ("fifo-txt", "special/pipe.txt", "not a regular file"),
    ("fifo-jsonl", "special/pipe.jsonl", "not a regular file"),
    ("dangling-link", "links/dangling.png", "dangling symbolic link"),
    ("link-loop", "links/loop-a.png", "symbolic link loop"),
    ("txt-link-to-system-file", "links/passwd.txt", "outside the indexed folder"),
    ("jpg-link-to-dev-zero", "links/zero.jpg", "outside the indexed folder"),
    ("dir-link-outside", "links/outside-dir", "symbolic link to a folder outside"),
    ("bomb", "img/bomb.png", "decompression bomb refused"),
    ("thin-png", "img/thin.png", "image too thin or too wide"),
    ("truncated-jpeg", "img/truncated.jpg", "corrupt or truncated image"),
    ("text-named-png", "img/fake.png", "not a recognised image"),
    ("latin1-txt", "texts/latin1.txt", "not UTF-8"),
    ("empty-txt", "texts/empty.txt", "empty text"),
    ("blank-md", "texts/blank.md", "empty text"),
    ("large-txt", "texts/large.txt", "file too large"),
    ("binary-jsonl", "texts/binary.jsonl:1", "malformed JSON line"),
]


@contextlib.contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    """Fail (instead of hanging forever) when the block runs longer than ``seconds``."""

    def alarm(*_):
        raise TimeoutError(f"hung for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _line(value) -> bytes:
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else json.dumps(value)).encode("utf-8")


def _build(root: Path, outside: Path, sample_images, bad_images) -> dict[str, str]:
    """The hostile folder; returns the expected source of each case."""
    for sub in ("img", "docimg", "special", "links", "texts", "notes"):
        (root / sub).mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("a secret outside the folder")
    for name, text in GOOD_TEXTS.items():
        (root / name).write_text(text)
    for p in sample_images[:3]:
        (root / "img" / p.name).write_bytes(p.read_bytes())
    (root / "img" / "ok.png").write_bytes(sample_images[3].read_bytes())
    (root / "img" / "empty.png").write_bytes(b"")
    (root / "img" / "empty2.png").write_bytes(b"")
    (root / "img" / "fake.png").write_text("not an image")
    (root / "img" / "truncated.jpg").write_bytes(bad_images["truncated_jpeg"].read_bytes())
    (root / "img" / "bomb.png").write_bytes(bad_images["decompression_bomb"].read_bytes())
    write_png_1bit(root / "img" / "thin.png", 1, 40000)
    # images only .jsonl records name: indexed as part of them, not on their own
    (root / "docimg" / "empty.png").write_bytes(b"")
    (root / "docimg" / "fake.png").write_text("not an image either")
    write_png_1bit(root / "docimg" / "thin.png", 40000, 1)
    os.mkfifo(root / "special" / "pipe.jpg")
    os.mkfifo(root / "special" / "pipe.txt")
    os.mkfifo(root / "special" / "pipe.jsonl")
    os.symlink(root / "nowhere.png", root / "links" / "dangling.png")
    os.symlink(root / "links" / "loop-b.png", root / "links" / "loop-a.png")
    os.symlink(root / "links" / "loop-a.png", root / "links" / "loop-b.png")
    os.symlink("/etc/passwd", root / "links" / "passwd.txt")
    os.symlink("/dev/zero", root / "links" / "zero.jpg")
    os.symlink(outside, root / "links" / "outside-dir")
    os.symlink(root, root / "links" / "back-to-root")  # a cycle inside: walked once
    (root / "texts" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "texts" / "empty.txt").write_bytes(b"")
    (root / "texts" / "blank.md").write_text("   \n\t")
    (root / "texts" / "large.txt").write_text("x" * 3000)
    (root / "texts" / "binary.jsonl").write_bytes(b"\x00\xff\xfe garbage \x89PNG\n")
    lines = [b'\xef\xbb\xbf{"text": "a first line after a byte order mark"}']
    lines.append(json.dumps({"text": "a good jsonl text", "price": 3.5, "gone": None}).encode())
    lines.append(json.dumps({"text": "a product", "image": "img/ok.png", "sku": "p1"}).encode())
    lines.append(b'{"text": "a windows line"}\r')
    sources = {}
    for case, value, _ in BAD_LINES:
        lines.append(_line(value))
        sources[case] = f"{root / 'catalog.jsonl'}:{len(lines)}"
    (root / "catalog.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for case, name, _ in BAD_FILES:
        sources[case] = str(root / name)
    return sources


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, tiny_clip, sample_images, bad_images):
    """Index the hostile folder once with the command line; (sources, output, store)."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "shop"
    sources = _build(root, base / "outside", sample_images, bad_images)
    argv = ["index", str(root), "--db", str(base / "db"), *model_args(tiny_clip)]
    with pytest.MonkeyPatch.context() as mp, no_hang():
        mp.setattr(index_inputs, "MAX_TEXT_FILE_BYTES", 2000)
        mp.setattr(index_inputs, "MAX_JSONL_LINE_BYTES", 300_000)
        import io
        from contextlib import redirect_stderr, redirect_stdout

        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = main(argv)
    assert rc == 0, err.getvalue()
    assert "Traceback" not in err.getvalue() + out.getvalue()
    store = ChromaStore.persistent(base / "db")
    return sources, out.getvalue(), store


def _reason_of(output: str, source: str) -> str:
    hits = [line for line in output.splitlines() if line.startswith(f"  skipped {source} (")]
    assert len(hits) == 1, f"{source}: {len(hits)} skip lines in\n{output}"
    return hits[0].split("): ", 1)[1]


def test_every_good_item_is_stored(hostile_run, sample_images):
    _sources, out, store = hostile_run
    counts = store.counts()
    # texts: good.txt, good.md, BOM line, good jsonl text, windows line; images: 3 samples (ok.png
    # is claimed by its product record); documents: the product.
    assert counts == {"text": 5, "image": 3, "multimodal": 1}, out
    first = out.splitlines()[0]
    assert first.startswith("added 3 image, 1 multimodal, 5 text; skipped ")
    stored = store.client.get_collection(store.collection_name("text")).get(include=["documents"])
    assert "a secret outside the folder" not in stored["documents"]
    assert not any("root:" in d for d in stored["documents"])  # /etc/passwd was not stored


@pytest.mark.parametrize(("case", "value", "words"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_bad_jsonl_line_is_skipped_with_a_reason(hostile_run, case, value, words):
    sources, out, _store = hostile_run
    reason = _reason_of(out, sources[case])
    assert words in reason, reason


@pytest.mark.parametrize(("case", "name", "words"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_is_skipped_with_a_reason(hostile_run, case, name, words):
    sources, out, _store = hostile_run
    reason = _reason_of(out, sources[case])
    assert words in reason, reason
    if case in ("bomb", "thin-png", "empty-png", "truncated-jpeg", "fifo-jpg"):
        assert f"'{sources[case]}'" in reason  # the reason names the file, not "<N bytes>"


def test_a_link_cycle_inside_the_folder_is_walked_once(hostile_run):
    _sources, out, _store = hostile_run
    assert "back-to-root" not in out  # followed (inside the folder), and not walked twice
    assert out.count("duplicate of") == 1  # only the duplicate jsonl line


# ------------------------------------------------------------------ cases that run on their own
@pytest.fixture
def run_cli(tmp_path, tiny_clip, capsys):
    def run(*args: str, model: bool = True, quiet: bool = True) -> tuple[int, str, str]:
        argv = ["index", *args, "--db", str(tmp_path / "db")] + (["--quiet"] if quiet else [])
        with no_hang():
            rc = main(argv + (model_args(tiny_clip) if model else []))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        if rc != 0:
            assert rc == 2 and len(err.strip().splitlines()) == 1, err
        return rc, out, err

    return run


def test_nonexistent_path_is_one_line_error(run_cli, tmp_path):
    rc, _out, err = run_cli(str(tmp_path / "nonexistent"))
    assert rc == 2 and "nonexistent" in err


def test_dangling_top_level_link_is_one_line_error(run_cli, tmp_path):
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    rc, _out, err = run_cli(str(tmp_path / "link"))
    assert rc == 2 and "link" in err


def test_empty_folder_is_one_line_error(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    rc, _out, err = run_cli(str(tmp_path / "empty"))
    assert rc == 2 and "nothing to index" in err


@pytest.mark.parametrize("alpha", ["2", "-0.5", "nan", "inf"])
def test_bad_alpha_is_one_line_error(run_cli, tmp_path, alpha):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "x", "image": "none.png"}))
    rc, _out, err = run_cli(str(tmp_path / "a.jsonl"), "--alpha", alpha)
    assert rc == 2 and "alpha must be a number in [0, 1]" in err


def test_files_named_explicitly_are_read_even_through_links(run_cli, tmp_path, sample_images):
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    os.mkfifo(tmp_path / "pipe.png")
    os.symlink(sample_images[0], tmp_path / "photo.png")
    (tmp_path / "data.csv").write_text("a,b")
    (tmp_path / "ok.txt").write_text("fine")
    args = ["zero.jpg", "pipe.png", "photo.png", "data.csv", "ok.txt"]
    rc, out, _err = run_cli(*(str(tmp_path / a) for a in args))
    assert rc == 0 and out.startswith("added 1 image, 1 text; skipped 3")
    rc, out, _err = run_cli(*(str(tmp_path / a) for a in args[:4]), quiet=False)
    assert out.splitlines()[:2] == ["added nothing; skipped 4", "  already indexed: 1 (1 image)"]


def test_follow_links_reads_outside_the_folder(run_cli, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "far.txt").write_text("a text that lives elsewhere")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside / "far.txt", root / "far.txt")
    (root / "recs.jsonl").write_text(json.dumps({"text": "x", "image": "../outside/none.png"}))
    rc, out, _ = run_cli(str(root))
    assert rc == 0 and out.startswith("added nothing; skipped 2")
    rc, out, _ = run_cli(str(root), "--follow-links")
    assert rc == 0 and out.startswith("added 1 text; skipped 1")  # none.png: file not found


# ------------------------------------------------------------------ the Python API
@pytest.fixture
def engine(tmp_path, tiny_encoder):
    return RetrievalEngine(ChromaStore.persistent(tmp_path / "api-db", "api"), tiny_encoder)


def test_api_special_files_as_images_do_not_hang(engine, tmp_path, sample_images):
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    with no_hang(60):
        report = engine.index(
            images=[tmp_path / "pipe.jpg", tmp_path / "zero.jpg", sample_images[0]],
            documents=[{"text": "t", "image": tmp_path / "pipe.jpg"}],
            progress=False,
        )
    reasons = [s.reason for s in report.skipped]
    assert report.added == {"image": 1}
    assert "FIFO" in reasons[0] and "character device" in reasons[1]
    assert reasons[2].startswith("image: not a regular file")


def test_api_length_mismatch_is_one_line_error(engine):
    with pytest.raises(ValueError, match="text_metadatas: 1 entries for 2 texts"):
        engine.index(texts=["a", "b"], text_metadatas=[{}], progress=False)
    with pytest.raises(ValueError, match="document_sources: 2 entries for 1 documents"):
        engine.index(documents=[{"text": "a", "image": b"x"}], document_sources=["a", "b"])
    assert engine.store.counts() == {}


def test_api_bad_metadata_skips_only_its_item(engine, sample_images):
    report = engine.index(
        texts=["one", "two", "three"],
        text_metadatas=[{"ok": 1}, {"bad": float("nan")}, "not a dict"],
        images=sample_images[:1],
        image_metadatas=[{"chroma:document": "x"}],
        progress=False,
    )
    assert report.added == {"text": 1}
    reasons = {s.source: s.reason for s in report.skipped}
    assert reasons["texts[1]"] == "metadata 'bad' is nan: only finite numbers can be stored"
    assert reasons["texts[2]"] == "metadata must be a dict, got str"
    assert "is reserved" in reasons[str(sample_images[0])]


def test_api_thin_pil_image_and_bad_objects(engine):
    from PIL import Image

    thin = Image.new("L", (1, 40000))
    report = engine.index(images=[thin, 12345, object()], progress=False)
    reasons = {s.source: s.reason for s in report.skipped}
    assert "too thin" in reasons["images[0]"]
    assert reasons["images[1]"].startswith("unsupported input int")
    assert reasons["images[2]"].startswith("unsupported input object")
    assert report.n_added == 0
