"""Indexing: embed prepared items the store lacks and write them, batch by batch.

Every bad item is skipped with a reason, never raised: the report lists it, and the rest is indexed.
Problems of the whole run (mismatched argument lengths, a store built with another model or another
multimodal ``alpha``) raise one-line ``ValueError`` before anything is embedded. Item checks live in
:mod:`mmgap_core.index_prepare`.

A multimodal document (a text and an image) is stored under the modality ``"multimodal"`` as
``normalise(alpha * normalise(t) + (1 - alpha) * normalise(v))``, GR-CLIP's MixBench recipe. The
store records ``alpha`` in its manifest (field :data:`ALPHA_FIELD`) at the first multimodal write.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .encoders.base import (
    DEFAULT_DOCUMENT_ALPHA,
    DOCUMENT_MODALITY,
    Encoder,
    check_alpha,
    encoder_spec,
    mix_document_vectors,
)
from .index_prepare import (
    PreparedBatch,
    check_metadata,
    prepare_documents,
    prepare_images,
    prepare_texts,
)
from .results import ALREADY_INDEXED, IndexReport
from .store.base import AddResult, WritableVectorStore

__all__ = [
    "ALPHA_FIELD",
    "PreparedBatch",
    "check_metadata",
    "index_items",
    "prepare_documents",
    "prepare_images",
    "prepare_texts",
    "resolve_alpha",
    "write_batch",
]

logger = logging.getLogger(__name__)

#: Manifest field holding the text weight of the store's multimodal documents.
ALPHA_FIELD = "multimodal_alpha"


def _image_reason(reason: str, label: Any) -> str:
    """Name the file in a reason the encoder gave about the bytes read from it."""
    return reason.replace("image data", f"'{label}'", 1) if isinstance(label, str) else reason


def _embed(
    encoder: Encoder, batch: PreparedBatch, todo: list[int], alpha: float, report: IndexReport
) -> tuple[np.ndarray, list[int], str | None]:
    """(vectors, the batch positions they belong to, model id); failures go to ``report``."""
    m = batch.modality
    if m == "text":
        emb = encoder.embed_texts([batch.items[i] for i in todo], progress=False)
    elif m == "image":
        emb = encoder.embed_images([batch.items[i] for i in todo], progress=False)
    if m != DOCUMENT_MODALITY:
        for pos, reason in sorted(emb.failures.items()):
            i = todo[pos]
            batch.skip(report, batch.sources[i], _image_reason(reason, batch.labels[i]))
        return emb.vectors, [todo[p] for p in emb.indices.tolist()], emb.model_id
    et = encoder.embed_texts([batch.items[i][0] for i in todo], progress=False)
    for pos, reason in sorted(et.failures.items()):
        batch.skip(report, batch.sources[todo[pos]], f"text: {reason}")
    text_ok = [todo[p] for p in et.indices.tolist()]
    ei = encoder.embed_images([batch.items[i][1] for i in text_ok], progress=False)
    for pos, reason in sorted(ei.failures.items()):
        i = text_ok[pos]
        batch.skip(report, batch.sources[i], "image: " + _image_reason(reason, batch.labels[i]))
    both = ei.indices.tolist()
    vectors, ok = mix_document_vectors(et.vectors[both], ei.vectors, alpha)
    rows = [text_ok[p] for p in both]
    for i, good in zip(rows, ok.tolist()):
        if not good:
            batch.skip(report, batch.sources[i], "text and image embeddings cancel out")
    return vectors, [i for i, good in zip(rows, ok.tolist()) if good], et.model_id


def _add(
    store: WritableVectorStore, batch: PreparedBatch, rows: list[int], vectors: np.ndarray, model
) -> tuple[AddResult, dict[int, str]]:
    """Add ``rows``; a batch the store refuses is retried item by item, so a bad item loses itself.

    Returns the store's result and the refused rows with the store's reason. When the store refuses
    every item with the same reason (another model, another dimension), that is raised instead.
    """

    def add(rs: list[int], vecs: np.ndarray) -> AddResult:
        return store.add(
            batch.modality,
            [batch.ids[i] for i in rs],
            vecs,
            documents=[batch.documents[i] for i in rs],
            uris=[batch.uris[i] for i in rs],
            metadatas=[batch.metadatas[i] for i in rs],
            model_id=model,
        )

    try:
        return add(rows, vectors), {}
    except ConnectionError:  # the store is gone: not an item's fault
        raise
    except Exception as exc:
        first = exc
    result, refused = AddResult(), {}
    for k, r in enumerate(rows):
        try:
            one = add([r], vectors[k : k + 1])
        except ConnectionError:
            raise
        except Exception as exc:
            refused[r] = " ".join(f"refused by the store: {exc}".split())
            continue
        result.added += one.added
        result.skipped.update(one.skipped)
    if len(rows) > 1 and not result.added and len(set(refused.values())) == 1:
        raise ValueError(" ".join(str(first).split())) from first
    return result, refused


def write_batch(
    store: WritableVectorStore,
    encoder: Encoder,
    batch: PreparedBatch,
    report: IndexReport,
    alpha: float = DEFAULT_DOCUMENT_ALPHA,
) -> list[str]:
    """Embed the items the store lacks and add them as one batch.

    Parameters
    ----------
    store : WritableVectorStore
    encoder : Encoder
    batch : PreparedBatch
    report : IndexReport
        Receives the counts and ids the store reports as added (an item another indexer wrote
        meanwhile is not counted), and the skipped items (already indexed, not embeddable, refused
        by the store).
    alpha : float, default 0.5
        Text weight of multimodal documents.

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
            batch.skip(report, sources[i], ALREADY_INDEXED)
    if not todo:
        return []
    vectors, rows, model = _embed(encoder, batch, todo, alpha, report)
    if not rows:
        return []
    res, refused = _add(store, batch, rows, vectors, model)
    report.added[modality] = report.added.get(modality, 0) + len(res.added)
    report.added_ids.extend(res.added)
    source_of = {ids[i]: sources[i] for i in rows}
    for cid, reason in res.skipped.items():
        batch.skip(report, source_of.get(cid, cid), reason)
    for i, reason in refused.items():
        batch.skip(report, sources[i], reason)
    logger.debug("added %d %s items, skipped %d", len(res.added), modality, len(res.skipped))
    return list(res.added)


def resolve_alpha(store: WritableVectorStore, alpha: float | None) -> tuple[float, bool]:
    """The multimodal text weight to index with, and whether the store has it recorded.

    Parameters
    ----------
    store : WritableVectorStore
    alpha : float, optional
        The caller's weight; default: the store's recorded one, else 0.5.

    Returns
    -------
    tuple of (float, bool)

    Raises
    ------
    ValueError
        ``alpha`` is not in ``[0, 1]``, or differs from the one the store recorded.
    """
    recorded = store.read_manifest().get(ALPHA_FIELD)
    if recorded is not None:
        recorded = check_alpha(recorded)
    if alpha is None:
        return (DEFAULT_DOCUMENT_ALPHA, False) if recorded is None else (recorded, True)
    alpha = check_alpha(alpha)
    if recorded is not None and not math.isclose(alpha, recorded, abs_tol=1e-12):
        raise ValueError(
            f"this store's multimodal documents were embedded with alpha={recorded:g}; refusing "
            f"alpha={alpha:g} (index with alpha={recorded:g}, or into another store)"
        )
    return alpha, recorded is not None


def _check_lengths(name: str, items: Sequence, **columns: Sequence | None) -> None:
    for label, column in columns.items():
        if column is not None and len(column) != len(items):
            raise ValueError(f"{label}: {len(column)} entries for {len(items)} {name}")


def index_items(
    store: WritableVectorStore,
    encoder: Encoder,
    texts: Sequence[Any] = (),
    images: Sequence[Any] = (),
    documents: Sequence[Mapping] = (),
    *,
    text_metadatas: Sequence[Mapping] | None = None,
    image_metadatas: Sequence[Mapping] | None = None,
    document_metadatas: Sequence[Mapping] | None = None,
    text_sources: Sequence[str] | None = None,
    image_sources: Sequence[str] | None = None,
    document_sources: Sequence[str] | None = None,
    alpha: float | None = None,
    batch_size: int = 64,
    progress: bool = True,
    on_write: Callable[[list[str]], None] | None = None,
) -> IndexReport:
    """Index texts, then images, then multimodal documents, ``batch_size`` at a time.

    Parameters
    ----------
    store, encoder
        Where to write, and what embeds.
    texts, images, documents : sequence
        The items (see ``RetrievalEngine.index``).
    text_metadatas, image_metadatas, document_metadatas : sequence of mapping, optional
        One entry per item.
    text_sources, image_sources, document_sources : sequence of str, optional
        Where each item came from, for the report and the default ``source`` metadata.
    alpha : float, optional
        Text weight of multimodal documents; default: the store's recorded one, else 0.5.
    batch_size : int, default 64
    progress : bool, default True
        Show a progress bar.
    on_write : callable, optional
        Called with the ids of each batch that wrote anything.

    Returns
    -------
    IndexReport
        The first write also records how to rebuild the encoder (its ``spec()``) in the manifest.

    Raises
    ------
    ValueError
        Before anything is embedded: a per-item argument of another length than its items, a
        store built with another model, an ``alpha`` other than the store's.
    """
    from tqdm.auto import tqdm

    _check_lengths("texts", texts, text_metadatas=text_metadatas, text_sources=text_sources)
    _check_lengths("images", images, image_metadatas=image_metadatas, image_sources=image_sources)
    _check_lengths(
        "documents", documents, document_metadatas=document_metadatas,
        document_sources=document_sources,
    )  # fmt: skip
    recorded_model = store.model_id
    if recorded_model is not None and recorded_model != encoder.model_id:
        raise ValueError(
            f"the store was built with model {recorded_model!r}; refusing to index with model "
            f"{encoder.model_id!r} (use that model, or another store name)"
        )
    known = False
    if documents or alpha is not None:
        alpha, known = resolve_alpha(store, alpha)
    report = IndexReport()
    spec = encoder_spec(encoder)

    def write(batch: PreparedBatch) -> None:
        nonlocal known, spec
        if batch.modality == DOCUMENT_MODALITY and batch.items and not known:
            store.update_manifest(**{ALPHA_FIELD: alpha})
            known = True
        added = write_batch(store, encoder, batch, report, alpha)
        if added and spec is not None:
            store.update_manifest(encoder=spec)
            spec = None
        if added and on_write is not None:
            on_write(added)

    def part(items: Sequence, *columns: Sequence | None):
        for s in range(0, len(items), batch_size):
            yield (
                s,
                items[s : s + batch_size],
                [c[s : s + batch_size] if c else None for c in columns],
            )

    total = len(texts) + len(images) + len(documents)
    with tqdm(total=total, desc="indexing", unit="item", disable=not progress) as bar:
        for s, chunk, (srcs, meta) in part(texts, text_sources, text_metadatas):
            write(prepare_texts(chunk, s, srcs, meta, report))
            bar.update(len(chunk))
        for s, chunk, (srcs, meta) in part(images, image_sources, image_metadatas):
            write(prepare_images(chunk, s, meta, report, srcs))
            bar.update(len(chunk))
        for s, chunk, (srcs, meta) in part(documents, document_sources, document_metadatas):
            write(prepare_documents(chunk, s, srcs, meta, report))
            bar.update(len(chunk))
    return report
