"""What ``mmgap index`` reads from files and folders: texts, images and multimodal documents.

* Images: ``.jpg .jpeg .png .gif .bmp .webp .tif .tiff`` files (read later by the engine).
* Texts: ``.txt`` and ``.md`` files, one item each.
* ``.jsonl`` files, one item per line: a line with a ``text`` and an ``image`` field is a
  multimodal document, a line with one of them a text or an image item. ``image`` is a file path,
  relative to the ``.jsonl`` file's folder. Every other field is metadata (``str``, ``int``,
  ``float``, ``bool``; ``null`` values are left out).

Nothing here raises for one bad input: a line or file that cannot be used is listed with a reason
naming ``file:line`` and the rest goes on. Only a path named on the command line that does not
exist raises (``FileNotFoundError``, one line).

Folders are walked without following a symbolic link that leads outside the folder named on the
command line (a ``.txt`` link to a system file must not be stored), nor a ``.jsonl`` image path
that does, unless ``follow_links=True``. Dangling links and link loops are listed as skipped.
Files named on the command line are read even when they are links.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .encoders.base import DOCUMENT_MODALITY
from .index_prepare import check_metadata
from .results import SkippedItem

__all__ = [
    "IMAGE_SUFFIXES",
    "IndexInputs",
    "MAX_JSONL_LINE_BYTES",
    "MAX_TEXT_FILE_BYTES",
    "TEXT_SUFFIXES",
    "collect_inputs",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
TEXT_SUFFIXES = frozenset({".txt", ".md"})
JSONL_SUFFIX = ".jsonl"
#: Largest ``.txt``/``.md`` file read (16 MiB); a larger one is skipped with a reason.
MAX_TEXT_FILE_BYTES = 16 * 1024 * 1024
#: Longest ``.jsonl`` line read (16 MiB); a longer one is skipped with a reason.
MAX_JSONL_LINE_BYTES = 16 * 1024 * 1024
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|data:)")
_FOLLOW_HINT = "pass --follow-links to follow it"


@dataclass
class IndexInputs:
    """Items found in the paths, ready for ``RetrievalEngine.index``, and the problems met.

    Attributes
    ----------
    texts, text_sources, text_metadatas : list
        Texts (``bytes`` from files, checked as UTF-8 by the engine; ``str`` from ``.jsonl``).
    images, image_sources, image_metadatas : list
        Image paths, with ``file.jsonl:N`` sources for images named by ``.jsonl`` lines.
    documents, document_sources, document_metadatas : list
        Multimodal documents ``{"text": str, "image": path}`` from ``.jsonl`` lines.
    problems : list of SkippedItem
        Files and lines that gave no item, with the reason.
    claimed : int
        Image files found in a folder that a ``.jsonl`` line names: they are indexed as part of
        that line's item, not again on their own.
    """

    texts: list = field(default_factory=list)
    text_sources: list[str] = field(default_factory=list)
    text_metadatas: list[dict] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    image_sources: list[str] = field(default_factory=list)
    image_metadatas: list[dict] = field(default_factory=list)
    documents: list[dict] = field(default_factory=list)
    document_sources: list[str] = field(default_factory=list)
    document_metadatas: list[dict] = field(default_factory=list)
    problems: list[SkippedItem] = field(default_factory=list)
    claimed: int = 0

    @property
    def n_items(self) -> int:
        """Texts, images and documents found."""
        return len(self.texts) + len(self.images) + len(self.documents)

    def skip(self, source: str, modality: str, reason: str) -> None:
        """List ``source`` as skipped."""
        self.problems.append(SkippedItem(str(source), modality, reason))


def _kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return "text" if suffix in TEXT_SUFFIXES or suffix == JSONL_SUFFIX else "file"


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _stat_problem(path: str) -> tuple[os.stat_result | None, str | None]:
    """``(stat of the link target, None)`` or ``(None, the reason it cannot be read)``."""
    try:
        return os.stat(path), None
    except FileNotFoundError:
        if os.path.islink(path):
            return None, f"dangling symbolic link: '{path}' points to missing '{os.readlink(path)}'"
        return None, f"no such file or folder: '{path}'"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, f"symbolic link loop: '{path}' never reaches a file"
        return None, f"cannot access '{path}': {exc.strerror or exc}"


def _open_regular(path: str, limit: int | None = None):
    """A binary file object of a regular file (never blocks on a FIFO), or ``OSError(reason)``."""
    st, problem = _stat_problem(path)
    if problem is None and not stat.S_ISREG(st.st_mode):
        problem = f"not a regular file: '{path}'"
    if problem is None and limit is not None and st.st_size > limit:
        problem = f"file too large: '{path}' is {st.st_size} bytes, above {limit}"
    if problem is not None:
        raise OSError(problem)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise OSError(f"cannot open '{path}': {exc.strerror or exc}") from None
    fh = open(fd, "rb", closefd=True)  # noqa: SIM115 - returned to the caller's with-block
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the check
        fh.close()
        raise OSError(f"not a regular file: '{path}'")
    return fh


def _walk(top: Path, follow: bool, out: IndexInputs) -> list[Path]:
    """Files under ``top`` in name order, each folder once; outward links only when ``follow``."""
    root = os.path.realpath(top)
    walked, files, stack = set(), [], [str(top)]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in walked:  # each folder once, however many links lead to it: no cycles
            continue
        walked.add(real)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            out.skip(folder, "file", f"cannot read folder: {exc.strerror or exc}")
            continue
        subfolders: list[str] = []
        for entry in entries:
            path = entry.path
            if not entry.is_symlink():
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(path)
                else:
                    files.append(Path(path))
                continue
            kind = _kind(path)
            st, problem = _stat_problem(path)
            if problem is not None:
                if kind != "file" or not Path(path).suffix:
                    out.skip(path, kind, problem)
                continue
            target = os.path.realpath(path)
            is_dir = stat.S_ISDIR(st.st_mode)
            if not follow and not _within(target, root):
                if is_dir or kind != "file":
                    what = "folder" if is_dir else "file"
                    reason = f"symbolic link to a {what} outside the indexed folder: '{path}' -> "
                    out.skip(path, kind, f"{reason}'{target}' not followed ({_FOLLOW_HINT})")
                continue
            if is_dir:
                subfolders.append(path)
            else:
                files.append(Path(path))
        stack.extend(reversed(subfolders))
    return files


def _lines(fh, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, bytes)``, or ``None`` for a line over ``limit`` bytes (then skipped)."""
    number = 0
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while True:  # drain the rest of the long line
                rest = fh.readline(1 << 20)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, None
        else:
            yield number, line


def _image_path(value: str, base: Path, root: str, follow: bool) -> str:
    """The path a ``.jsonl`` ``image`` field names, or ``ValueError`` when it may not be read."""
    if _URL.match(value):
        raise ValueError(f"image {value[:80]!r} is a URL: mmgap reads image files only")
    if not value.strip() or "\x00" in value:
        raise ValueError(f"image {value[:80]!r} is not a file path")
    path = Path(value) if os.path.isabs(value) else base / value
    target = os.path.realpath(path)
    if not follow and not _within(target, root):
        raise ValueError(
            f"image path {value[:200]!r} leads outside the indexed folder '{root}' "
            "(pass --follow-links to allow it)"
        )
    return str(path)


def _record(
    line: bytes, src: str, base: Path, root: str, follow: bool, out: IndexInputs
) -> str | None:
    """Add one ``.jsonl`` line's item to ``out``; its image's real path, if it names one."""
    try:
        rec = json.loads(line)
    except RecursionError:
        return out.skip(src, "text", "malformed JSON line: nested too deeply")
    except (ValueError, UnicodeDecodeError) as exc:  # includes JSONDecodeError
        return out.skip(src, "text", f"malformed JSON line: {' '.join(str(exc).split())[:200]}")
    if not isinstance(rec, dict):
        return out.skip(src, "text", f"JSON line is a {type(rec).__name__}, not an object")
    text, image = rec.get("text"), rec.get("image")
    kind = DOCUMENT_MODALITY if text is not None and image is not None else "text"
    kind = "image" if text is None and image is not None else kind
    if text is None and image is None:
        return out.skip(src, "text", "JSON line has no 'text' or 'image' field")
    if text is not None and not isinstance(text, str):
        return out.skip(src, kind, f"'text' is a {type(text).__name__}, not a string")
    if image is not None and not isinstance(image, str):
        return out.skip(src, kind, f"'image' is a {type(image).__name__}, not a file path")
    try:
        rest = {k: v for k, v in rec.items() if k not in ("text", "image")}
        meta = check_metadata(rest, kind)
        path = None if image is None else _image_path(image, base, root, follow)
    except ValueError as exc:
        return out.skip(src, kind, str(exc))
    meta.setdefault("source", src)
    if kind == "text":
        out.texts.append(text)
        out.text_sources.append(src)
        out.text_metadatas.append(meta)
    elif kind == "image":
        out.images.append(path)
        out.image_sources.append(src)
        out.image_metadatas.append(meta)
    else:
        out.documents.append({"text": text, "image": path})
        out.document_sources.append(src)
        out.document_metadatas.append(meta)
    return None if path is None else os.path.realpath(path)


def _read_jsonl(path: Path, root: str, follow: bool, out: IndexInputs) -> set[str]:
    """Every line of a ``.jsonl`` file into ``out``; the real paths of the images it names."""
    named: set[str] = set()
    try:
        fh = _open_regular(str(path))
    except OSError as exc:
        out.skip(str(path), "text", str(exc))
        return named
    with fh:
        try:
            for number, line in _lines(fh, MAX_JSONL_LINE_BYTES):
                src = f"{path}:{number}"
                if line is None:
                    out.skip(src, "text", f"line longer than {MAX_JSONL_LINE_BYTES} bytes")
                elif line.strip():
                    line = line.removeprefix(b"\xef\xbb\xbf") if number == 1 else line
                    image = _record(line, src, path.parent, root, follow, out)
                    if image is not None:
                        named.add(image)
        except OSError as exc:
            out.skip(str(path), "text", f"cannot read: {exc.strerror or exc}")
    return named


def _read_text(path: Path, out: IndexInputs) -> None:
    try:
        with _open_regular(str(path), MAX_TEXT_FILE_BYTES) as fh:
            data = fh.read(MAX_TEXT_FILE_BYTES + 1)
    except OSError as exc:
        return out.skip(str(path), "text", str(exc))
    if len(data) > MAX_TEXT_FILE_BYTES:
        return out.skip(str(path), "text", f"file too large: over {MAX_TEXT_FILE_BYTES} bytes")
    out.texts.append(data)  # bytes: the engine checks UTF-8
    out.text_sources.append(str(path))
    out.text_metadatas.append({"source": str(path)})


def collect_inputs(
    paths: Sequence[str | os.PathLike], *, follow_links: bool = False
) -> IndexInputs:
    """Texts, images and multimodal documents in ``paths``, and what could not be used.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        Files and folders (walked recursively, sorted).
    follow_links : bool, default False
        Follow symbolic links, and ``.jsonl`` image paths, that lead outside the folder named on
        the command line (for a file argument: its folder).

    Returns
    -------
    IndexInputs

    Raises
    ------
    FileNotFoundError
        A path that does not exist, or a dangling link or link loop (one line naming every such
        path); nothing is read then.
    """
    problems = [_stat_problem(os.fspath(p))[1] for p in paths if not os.path.exists(p)]
    if problems:
        raise FileNotFoundError("; ".join(problems))
    out = IndexInputs()
    files: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files += [(f, os.path.realpath(p)) for f in _walk(p, follow_links, out)]
        else:  # named on the command line: read even when it is a link
            files.append((p, os.path.realpath(p.parent)))
    named: set[str] = set()
    found_images: list[Path] = []
    for f, root in files:
        suffix = f.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            found_images.append(f)
        elif suffix in TEXT_SUFFIXES:
            _read_text(f, out)
        elif suffix == JSONL_SUFFIX:
            named |= _read_jsonl(f, root, follow_links, out)
        elif any(f == Path(p) for p in paths):
            out.skip(str(f), "file", f"not an indexable file type {suffix or '(no suffix)'!r}")
    for f in found_images:
        if os.path.realpath(f) in named:
            out.claimed += 1
        else:
            out.images.append(str(f))
            out.image_sources.append(str(f))
            out.image_metadatas.append({"source": str(f)})
    logger.debug("found %d items in %s; %d problems", out.n_items, list(paths), len(out.problems))
    return out
