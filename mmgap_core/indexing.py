"""Indexing: turn input texts and images into content-addressed store items, embed and write them.

Every bad item is skipped with a reason, never raised: the report lists it, and the rest is indexed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .encoders.base import Encoder
from .results import IndexReport, SkippedItem, content_id
from .store.base import WritableVectorStore

__all__ = ["PreparedBatch", "index_items", "prepare_images", "prepare_texts", "write_batch"]

logger = logging.getLogger(__name__)


@dataclass
class PreparedBatch:
    """Items of one modality ready to embed: payloads, ids, metadata and where each came from.

    Attributes
    ----------
    modality : str
        ``"text"`` or ``"image"``.
    items : list
        What the encoder embeds (texts; image bytes or PIL images).
    ids : list of str
        Content ids.
    metadatas : list of dict
        Metadata per item (with ``source``).
    sources : list of str
        A file path or ``"texts[3]"``-style position per item, for the report.
    documents, uris : list or None
        Stored text (texts) or URI (image files) per item.
    """

    modality: str
    items: list = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    metadatas: list[dict] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    documents: list[str | None] | None = None
    uris: list[str | None] | None = None
    _seen: dict[str, str] = field(default_factory=dict, repr=False)

    def take(
        self,
        cid: str,
        src: str,
        item: Any,
        meta: Mapping | None,
        report: IndexReport,
        *,
        uri: str | None = None,
    ) -> None:
        """Add one item, or report it as a duplicate of an earlier item of this batch.

        Parameters
        ----------
        cid : str
            Its content id.
        src : str
            Where it came from (a path or ``"texts[i]"``); the default ``source`` metadata.
        item : Any
            What the encoder embeds; a text is also stored as the document.
        meta : mapping, optional
            Its metadata.
        report : IndexReport
            Receives a duplicate.
        uri : str, optional
            An image file's URI.
        """
        if cid in self._seen:
            reason = f"duplicate of {self._seen[cid]}"
            report.skipped.append(SkippedItem(src, self.modality, reason))
            return
        self._seen[cid] = src
        m = dict(meta or {})
        m.setdefault("source", src)
        self.items.append(item)
        self.ids.append(cid)
        self.metadatas.append(m)
        if self.documents is not None:
            self.documents.append(item)
        if self.uris is not None:
            self.uris.append(uri)
        # A text is reported by its source metadata (a file path, or a .jsonl line).
        self.sources.append(m["source"] if self.modality == "text" else src)


def _image_source(img: Any, i: int) -> str:
    return os.fspath(img) if isinstance(img, (str, os.PathLike)) else f"images[{i}]"


def prepare_texts(
    chunk: Sequence[Any],
    offset: int,
    sources: Sequence[str] | None,
    metas: Sequence[Mapping] | None,
    report: IndexReport,
) -> PreparedBatch:
    """Check and content-address a chunk of texts; skips go to ``report``.

    Parameters
    ----------
    chunk : sequence of str or bytes
        Texts (``bytes`` must be UTF-8).
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
    batch = PreparedBatch("text", documents=[])
    for j, t in enumerate(chunk):
        src = sources[j] if sources else f"texts[{offset + j}]"
        if isinstance(t, bytes):
            try:
                t = t.decode("utf-8")
            except UnicodeDecodeError as exc:
                report.skipped.append(SkippedItem(src, "text", f"not UTF-8 text: {exc.reason}"))
                continue
        if not isinstance(t, str):
            report.skipped.append(SkippedItem(src, "text", f"not a string: {type(t).__name__}"))
            continue
        if not t.strip():
            report.skipped.append(SkippedItem(src, "text", "empty text"))
            continue
        batch.take(
            content_id("text", t.encode("utf-8")), src, t, metas[j] if metas else None, report
        )
    return batch


def prepare_images(
    chunk: Sequence[Any], offset: int, metas: Sequence[Mapping] | None, report: IndexReport
) -> PreparedBatch:
    """Read and content-address a chunk of images (paths, bytes or PIL images); skips to ``report``.

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

    Returns
    -------
    PreparedBatch
        A file is read once: its bytes are both hashed and handed to the encoder.
    """
    batch = PreparedBatch("image", uris=[])
    for j, img in enumerate(chunk):
        src = _image_source(img, offset + j)
        uri, payload = None, img
        if isinstance(img, (str, os.PathLike)):
            path = Path(img)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                report.skipped.append(SkippedItem(src, "image", "file not found"))
                continue
            except OSError as exc:
                report.skipped.append(SkippedItem(src, "image", f"unreadable file: {exc}"))
                continue
            uri, payload = str(path.resolve()), data
        elif isinstance(img, (bytes, bytearray)):
            data = payload = bytes(img)
        else:  # a PIL image: hash its pixels
            try:
                data = img.tobytes() + repr((img.mode, img.size)).encode()
            except Exception as exc:
                reason = f"unsupported input {type(img).__name__}: {exc}"
                report.skipped.append(SkippedItem(src, "image", reason))
                continue
        meta = metas[j] if metas else None
        batch.take(content_id("image", data), src, payload, meta, report, uri=uri)
    return batch


def write_batch(
    store: WritableVectorStore, encoder: Encoder, batch: PreparedBatch, report: IndexReport
) -> list[str]:
    """Embed the items the store lacks and add them as one batch.

    Parameters
    ----------
    store : WritableVectorStore
    encoder : Encoder
    batch : PreparedBatch
    report : IndexReport
        Receives the added counts and ids, and the skipped items (already indexed, not embeddable,
        refused by the store).

    Returns
    -------
    list of str
        The ids written.
    """
    if not batch.items:
        return []
    modality, ids, sources = batch.modality, batch.ids, batch.sources
    existing = store.existing_ids(modality, ids)
    todo = [i for i, cid in enumerate(ids) if cid not in existing]
    for i, cid in enumerate(ids):
        if cid in existing:
            report.skipped.append(SkippedItem(sources[i], modality, "already indexed"))
    if not todo:
        return []
    embed = encoder.embed_texts if modality == "text" else encoder.embed_images
    emb = embed([batch.items[i] for i in todo], progress=False)
    for pos, reason in sorted(emb.failures.items()):
        report.skipped.append(SkippedItem(sources[todo[pos]], modality, reason))
    if len(emb) == 0:
        return []
    rows = [todo[p] for p in emb.indices.tolist()]
    res = store.add(
        modality,
        [ids[i] for i in rows],
        emb.vectors,
        documents=[batch.documents[i] for i in rows] if batch.documents is not None else None,
        uris=[batch.uris[i] for i in rows] if batch.uris is not None else None,
        metadatas=[batch.metadatas[i] for i in rows],
        model_id=emb.model_id,
    )
    report.added[modality] = report.added.get(modality, 0) + len(res.added)
    report.added_ids.extend(res.added)
    source_of = {ids[i]: sources[i] for i in rows}
    for cid, reason in res.skipped.items():
        report.skipped.append(SkippedItem(source_of.get(cid, cid), modality, reason))
    logger.debug("added %d %s items, skipped %d", len(res.added), modality, len(res.skipped))
    return list(res.added)


def index_items(
    store: WritableVectorStore,
    encoder: Encoder,
    texts: Sequence[Any],
    images: Sequence[Any],
    *,
    text_metadatas: Sequence[Mapping] | None = None,
    image_metadatas: Sequence[Mapping] | None = None,
    text_sources: Sequence[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
    on_write: Callable[[list[str]], None] | None = None,
) -> IndexReport:
    """Index texts, then images, ``batch_size`` at a time (see ``RetrievalEngine.index``).

    Parameters
    ----------
    store, encoder
        Where to write, and what embeds.
    texts, images : sequence
        The items.
    text_metadatas, image_metadatas, text_sources : sequence, optional
        One entry per text or image.
    batch_size : int, default 64
    progress : bool, default True
        Show a progress bar.
    on_write : callable, optional
        Called with the ids of each batch that wrote anything.

    Returns
    -------
    IndexReport
    """
    from tqdm.auto import tqdm

    for name, meta, items in (("text", text_metadatas, texts), ("image", image_metadatas, images)):
        if meta is not None and len(meta) != len(items):
            raise ValueError(f"{name}_metadatas: {len(meta)} entries for {len(items)} {name}s")
    if text_sources is not None and len(text_sources) != len(texts):
        raise ValueError(f"text_sources: {len(text_sources)} entries for {len(texts)} texts")
    report = IndexReport()

    def write(batch: PreparedBatch) -> None:
        added = write_batch(store, encoder, batch, report)
        if added and on_write is not None:
            on_write(added)

    total = len(texts) + len(images)
    with tqdm(total=total, desc="indexing", unit="item", disable=not progress) as bar:
        for s in range(0, len(texts), batch_size):
            chunk = texts[s : s + batch_size]
            srcs = text_sources[s : s + batch_size] if text_sources else None
            meta = text_metadatas[s : s + batch_size] if text_metadatas else None
            write(prepare_texts(chunk, s, srcs, meta, report))
            bar.update(len(chunk))
        for s in range(0, len(images), batch_size):
            chunk = images[s : s + batch_size]
            meta = image_metadatas[s : s + batch_size] if image_metadatas else None
            write(prepare_images(chunk, s, meta, report))
            bar.update(len(chunk))
    return report
