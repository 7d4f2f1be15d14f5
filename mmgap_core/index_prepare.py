"""Index item preparation: check, read and content-address texts, images and multimodal documents.

Each ``prepare_*`` function turns a chunk of the caller's input into a :class:`PreparedBatch` of
one modality, and reports every item it cannot take (empty text, unreadable image, bad metadata,
duplicate) as skipped with a reason. Image files are read through
:func:`~mmgap_core.encoders.image_decoding.read_image_file`: regular files of bounded size only.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .encoders.base import DOCUMENT_MODALITY
from .encoders.image_decoding import ImageSkip, read_image_file
from .results import BATCH_KEY, IndexReport, SkippedItem, content_id, document_id

__all__ = [
    "RESERVED_METADATA_KEYS",
    "RESERVED_METADATA_PREFIXES",
    "ItemSkip",
    "PreparedBatch",
    "check_metadata",
    "prepare_documents",
    "prepare_images",
    "prepare_texts",
]

logger = logging.getLogger(__name__)

#: Metadata keys the store sets itself (``modality`` may repeat the item's own modality).
RESERVED_METADATA_KEYS = ("modality", BATCH_KEY)
#: Key prefixes Chroma keeps for itself or refuses.
RESERVED_METADATA_PREFIXES = ("chroma:", "#", "$")
_INT64 = (-(2**63), 2**63 - 1)
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


class ItemSkip(Exception):
    """An item that cannot be indexed; ``str(exc)`` is the reason."""


def _valid_unicode(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ItemSkip(f"{what} is not valid Unicode (lone surrogate)") from None


def check_metadata(meta: Mapping | None, modality: str) -> dict:
    """Metadata as a store can keep it, or ``ValueError`` naming what is wrong.

    Parameters
    ----------
    meta : mapping, optional
        The caller's metadata of one item.
    modality : str
        The modality the item is stored under.

    Returns
    -------
    dict
        A copy; ``None`` values are left out (a store has no null).

    Raises
    ------
    ValueError
        A key that is not a non-empty string, or is reserved (``modality`` with another value,
        ``mmgap_batch``, keys starting with ``chroma:``, ``#`` or ``$``); a value that is not a
        ``str``, ``bool``, 64-bit ``int`` or finite ``float``.
    """
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValueError(f"metadata must be a dict, got {type(meta).__name__}")
    out = {}
    try:
        for key, value in meta.items():
            if not isinstance(key, str) or not key:
                raise ItemSkip(f"metadata key {key!r} is not a non-empty string")
            _valid_unicode(key, f"metadata key {key!r}")
            if key.startswith(RESERVED_METADATA_PREFIXES):
                raise ItemSkip(
                    f"metadata key {key!r} is reserved (keys starting with 'chroma:', '#' or '$')"
                )
            if key in RESERVED_METADATA_KEYS and (key != "modality" or value != modality):
                what = f"to {modality!r}" if key == "modality" else "to the write batch's id"
                raise ItemSkip(f"metadata key {key!r} is reserved: mmgap sets it {what}")
            if isinstance(value, np.generic):
                value = value.item()
            if value is None:
                continue
            if isinstance(value, str):
                _valid_unicode(value, f"metadata {key!r}")
            elif isinstance(value, float) and not math.isfinite(value):
                raise ItemSkip(f"metadata {key!r} is {value}: only finite numbers can be stored")
            elif isinstance(value, int) and not isinstance(value, bool):
                if not _INT64[0] <= value <= _INT64[1]:
                    raise ItemSkip(f"metadata {key!r} = {value} does not fit a 64-bit integer")
            elif not isinstance(value, (bool, float)):
                raise ItemSkip(
                    f"metadata {key!r} is a {type(value).__name__}: only str, int, float and bool "
                    "values can be stored"
                )
            out[key] = value
    except ItemSkip as exc:
        raise ValueError(str(exc)) from None
    return out


def _mime_type(data: bytes, payload: Any, uri: str | None) -> str | None:
    """The image's MIME type from its first bytes, else its PIL format, else its file name."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    fmt = getattr(payload, "format", None)
    if fmt:
        from PIL import Image

        return Image.MIME.get(fmt)
    if uri:
        import mimetypes

        return mimetypes.guess_type(uri)[0]
    return None


def _read_image(img: Any) -> tuple[bytes, Any, str | None]:
    """(bytes to hash, what the encoder embeds, URI) of one image input, or :class:`ImageSkip`."""
    if isinstance(img, (str, os.PathLike)):
        data = read_image_file(img)  # a regular, bounded file: never a FIFO or /dev/zero
        return data, data, str(Path(img).resolve())
    if isinstance(img, (bytes, bytearray, memoryview)):
        data = bytes(img)
        if not data:
            raise ImageSkip("empty bytes: no image data")
        return data, data, None
    try:  # a PIL image: hash its pixels
        return img.tobytes() + repr((img.mode, img.size)).encode(), img, None
    except Exception as exc:
        raise ImageSkip(f"unsupported input {type(img).__name__}: {exc}") from None


def _text(t: Any) -> str:
    """A checked text, or :class:`ItemSkip`."""
    if isinstance(t, bytes):
        try:
            t = t.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ItemSkip(f"not UTF-8 text: {exc.reason}") from None
    if not isinstance(t, str):
        raise ItemSkip(f"not a string: {type(t).__name__}")
    if not t.strip():
        raise ItemSkip("empty text")
    _valid_unicode(t, "text")
    return t


@dataclass
class PreparedBatch:
    """Items of one modality ready to embed: payloads, ids, metadata and where each came from.

    Attributes
    ----------
    modality : str
        ``"text"``, ``"image"`` or ``"multimodal"``.
    items : list
        What the encoder embeds: texts; image bytes or PIL images; ``(text, image)`` pairs.
    ids : list of str
        Content ids.
    metadatas : list of dict
        Metadata per item (with ``source``).
    sources : list of str
        A file path, ``"file.jsonl:3"`` or ``"texts[3]"``-style position per item, for the report.
    documents, uris : list
        Stored text and image URI per item (``None`` where there is none).
    labels : list of str or None
        The image's path per item (for reasons the encoder gives about image bytes).
    """

    modality: str
    items: list = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    metadatas: list[dict] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    documents: list[str | None] = field(default_factory=list)
    uris: list[str | None] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    _seen: dict[str, str] = field(default_factory=dict, repr=False)

    def skip(self, report: IndexReport, src: str, reason: str) -> None:
        """Report the item from ``src`` as skipped under this batch's modality."""
        report.skipped.append(SkippedItem(src, self.modality, reason))

    def take(
        self,
        cid: str,
        src: str,
        item: Any,
        meta: dict,
        report: IndexReport,
        *,
        document: str | None = None,
        uri: str | None = None,
        label: str | None = None,
    ) -> None:
        """Add one item, or report it as a duplicate of an earlier item of this batch.

        Parameters
        ----------
        cid : str
            Its content id.
        src : str
            Where it came from; the ``source`` metadata unless ``meta`` names one.
        item : Any
            What the encoder embeds.
        meta : dict
            Its checked metadata.
        report : IndexReport
            Receives a duplicate.
        document, uri, label : str, optional
            Its stored text, its image's URI, and its image's path for reasons.
        """
        if cid in self._seen:
            self.skip(report, src, f"duplicate of {self._seen[cid]}")
            return
        self._seen[cid] = src
        meta.setdefault("source", src)
        self.items.append(item)
        self.ids.append(cid)
        self.metadatas.append(meta)
        self.documents.append(document)
        self.uris.append(uri)
        self.labels.append(label)
        self.sources.append(src)


def _source(sources: Sequence[str] | None, j: int, default: str, meta: Mapping | None) -> str:
    if sources:
        return str(sources[j])
    given = meta.get("source") if isinstance(meta, Mapping) else None
    return given if isinstance(given, str) and given else default


def prepare_texts(
    chunk: Sequence[Any],
    offset: int,
    sources: Sequence[str] | None,
    metas: Sequence[Mapping] | None,
    report: IndexReport,
) -> PreparedBatch:
    """Check and content-address a chunk of texts (``str`` or UTF-8 ``bytes``); skips to ``report``.

    Parameters
    ----------
    chunk : sequence
        Texts.
    offset : int
        Position of ``chunk[0]`` in the caller's input, for ``"texts[i]"`` sources.
    sources, metas : sequence, optional
        Per-item source labels and metadata.
    report : IndexReport
        Receives the skipped items.

    Returns
    -------
    PreparedBatch
    """
    batch = PreparedBatch("text")
    for j, t in enumerate(chunk):
        meta = metas[j] if metas else None
        src = _source(sources, j, f"texts[{offset + j}]", meta)
        try:
            text = _text(t)
            checked = check_metadata(meta, batch.modality)
        except (ItemSkip, ValueError) as exc:
            batch.skip(report, src, str(exc))
            continue
        cid = content_id("text", text.encode("utf-8"))
        batch.take(cid, src, text, checked, report, document=text)
    return batch


def prepare_images(
    chunk: Sequence[Any],
    offset: int,
    metas: Sequence[Mapping] | None,
    report: IndexReport,
    sources: Sequence[str] | None = None,
) -> PreparedBatch:
    """Read and content-address a chunk of images (paths, bytes or PIL images); skips to ``report``.

    Files are read through :func:`~mmgap_core.encoders.image_decoding.read_image_file` (regular
    files of bounded size only), once: their bytes are both hashed and handed to the encoder.

    Parameters
    ----------
    chunk : sequence
        Image paths, encoded bytes or PIL images.
    offset : int
        Position of ``chunk[0]`` in the caller's input, for ``"images[i]"`` sources.
    metas : sequence of mapping, optional
        Per-item metadata.
    report : IndexReport
        Receives the skipped items.
    sources : sequence of str, optional
        Per-item source labels (default: the path, or ``"images[i]"``).

    Returns
    -------
    PreparedBatch
    """
    batch = PreparedBatch("image")
    for j, img in enumerate(chunk):
        path = os.fspath(img) if isinstance(img, (str, os.PathLike)) else None
        meta = metas[j] if metas else None
        src = _source(sources, j, path if isinstance(path, str) else f"images[{offset + j}]", None)
        try:
            checked = check_metadata(meta, batch.modality)
            data, payload, uri = _read_image(img)
        except (ValueError, ImageSkip) as exc:
            batch.skip(report, src, str(exc))
            continue
        batch.take(content_id("image", data), src, payload, checked, report, uri=uri, label=path)
    return batch


def prepare_documents(
    chunk: Sequence[Any],
    offset: int,
    sources: Sequence[str] | None,
    metas: Sequence[Mapping] | None,
    report: IndexReport,
) -> PreparedBatch:
    """Check, read and content-address multimodal documents ``{"text": ..., "image": ...}``.

    Parameters
    ----------
    chunk : sequence of mapping
        Documents: ``text`` (``str``), ``image`` (path, bytes or PIL image), optional ``metadata``
        (merged under ``metas``).
    offset : int
        Position of ``chunk[0]`` in the caller's input, for ``"documents[i]"`` sources.
    sources, metas : sequence, optional
        Per-document source labels and metadata.
    report : IndexReport
        Receives the skipped documents: empty text, missing or unreadable image, bad metadata.

    Returns
    -------
    PreparedBatch
        Items are ``(text, image payload)`` pairs; metadata gets the image's ``mime_type``.
    """
    batch = PreparedBatch(DOCUMENT_MODALITY)
    for j, doc in enumerate(chunk):
        meta = metas[j] if metas else None
        src = _source(sources, j, f"documents[{offset + j}]", meta)
        try:
            if not isinstance(doc, Mapping):
                raise ItemSkip(f"not a mapping with 'text' and 'image': {type(doc).__name__}")
            unknown = sorted(str(k) for k in doc if k not in ("text", "image", "metadata"))
            if unknown:
                raise ItemSkip(f"unknown document keys {unknown}: use 'text', 'image', 'metadata'")
            if doc.get("text") is None or doc.get("image") is None:
                missing = "text" if doc.get("text") is None else "image"
                raise ItemSkip(f"no {missing}: a multimodal document needs both 'text' and 'image'")
            text = _text(doc["text"])
            checked = check_metadata(
                {**(doc.get("metadata") or {}), **(meta or {})}, batch.modality
            )
            image = doc["image"]
            try:
                data, payload, uri = _read_image(image)
            except ImageSkip as exc:
                raise ItemSkip(f"image: {exc}") from None
        except (ItemSkip, ValueError, TypeError) as exc:
            batch.skip(report, src, str(exc))
            continue
        mime = _mime_type(data, payload, uri)
        if mime:
            checked.setdefault("mime_type", mime)
        path = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
        cid = document_id(text, data)
        batch.take(cid, src, (text, payload), checked, report, document=text, uri=uri, label=path)
    return batch
