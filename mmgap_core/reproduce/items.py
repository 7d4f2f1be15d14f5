"""Benchmark items as the encoder and the embedding cache see them.

Cache keys name an item's content (:func:`text_key`, :func:`image_key`), input makers turn keys
into encoder inputs (:func:`text_inputs`, :func:`image_inputs`), and :func:`reason_category`
buckets the encoder's failure reasons for counting.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping

from ..datasets.base import ImageRef

__all__ = ["image_inputs", "image_key", "reason_category", "text_inputs", "text_key"]

InputMaker = Callable[[list[str]], tuple[list, dict[str, str]]]
"""``make(keys) -> (encoder inputs, {key: failure reason})``: inputs in key order, failures out."""

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|<[^>]*>")


def text_key(text: str) -> str:
    """Return the cache key of a text: a hash of the exact text embedded.

    Parameters
    ----------
    text : str
        The question, passage or caption as given to the encoder.

    Returns
    -------
    str
        ``"t:"`` followed by 40 hex digits of its SHA-256.
    """
    return "t:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def image_key(ref: ImageRef) -> str:
    """Return the cache key of an image, naming its bytes without reading them.

    Parameters
    ----------
    ref : ImageRef
        A file (MMQA) or a TSV line (WebQA).

    Returns
    -------
    str
        ``i:ID|FILE NAME|SIZE|MTIME`` (or the TSV store's name with ``@OFFSET``), so a changed
        file invalidates exactly the images it holds. ``unreadable`` replaces size and mtime
        when the file cannot be stat-ed.
    """
    where = ref.path if ref.path is not None else ref.tsv
    try:
        st = os.stat(where) if where is not None else None
    except OSError:
        st = None
    stamp = f"{st.st_size}|{st.st_mtime_ns}" if st is not None else "unreadable"
    name = where.name if where is not None else ""
    offset = f"@{ref.offset}" if ref.tsv is not None and ref.path is None else ""
    return f"i:{ref.id}|{name}{offset}|{stamp}"


def reason_category(reason: str) -> str:
    """Strip the item-specific parts (quoted paths, ids) from a failure reason.

    Parameters
    ----------
    reason : str
        A failure reason, e.g. ``"file not found: '/data/x.jpg'"``.

    Returns
    -------
    str
        The text before the first colon with quoted parts removed, e.g. ``"file not found"``:
        the key failures are counted under.
    """
    text = _QUOTED.sub("", str(reason)).split(":", 1)[0]
    return " ".join(text.split()).strip(" .") or "unknown failure"


def image_inputs(refs: Mapping[str, ImageRef]) -> InputMaker:
    """Make encoder inputs for image keys: the file path (MMQA) or the image's bytes (WebQA).

    Parameters
    ----------
    refs : mapping of str to ImageRef
        Cache key -> image.

    Returns
    -------
    callable
        An :data:`InputMaker`; an image whose bytes cannot be read is returned as a failure.
    """

    def make(keys: list[str]):
        inputs, failed = [], {}
        for k in keys:
            ref = refs[k]
            if ref.path is not None:
                inputs.append(str(ref.path))
                continue
            try:
                inputs.append(ref.load_bytes())
            except (OSError, ValueError) as exc:
                failed[k] = f"cannot read image bytes: {exc}"
        return inputs, failed

    return make


def text_inputs(texts: Mapping[str, str]) -> InputMaker:
    """Make encoder inputs for text keys: the texts themselves.

    Parameters
    ----------
    texts : mapping of str to str
        Cache key -> text.

    Returns
    -------
    callable
        An :data:`InputMaker` that never fails.
    """

    def make(keys: list[str]):
        return [texts[k] for k in keys], {}

    return make
