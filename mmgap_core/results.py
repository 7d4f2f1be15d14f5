"""What the engine hands back: search hits, index reports, and the content ids of stored items.

Content ids are hashes of what was embedded, so re-indexing the same input adds nothing: a text's
UTF-8 bytes, an image file's bytes, and for a multimodal document both (:func:`document_id`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .fusion import FusedRanking
    from .store.base import ModalityHits

__all__ = [
    "ALREADY_INDEXED",
    "BATCH_KEY",
    "Hit",
    "IndexReport",
    "SearchResult",
    "SkippedItem",
    "content_id",
    "document_id",
]

#: The reason of an item skipped because the store holds it already.
ALREADY_INDEXED = "already indexed"
#: Metadata key a store writes with each item (the id of the write that added it); hits omit it.
BATCH_KEY = "mmgap_batch"


@dataclass
class Hit:
    """One merged search result.

    Attributes
    ----------
    id : str
        The stored item's id (a content hash, see :func:`content_id`).
    modality : str
        The modality the item is stored under: ``"text"``, ``"image"`` or ``"multimodal"`` (a
        document made of a text and an image).
    score : float
        Calibrated score (a z score for ``standardize``); comparable across modalities.
    raw_score : float
        The cosine similarity between query and item.
    rank : int
        1-based position in the merged ranking.
    text, uri : str or None
        The stored text, and the image's URI (an absolute file path for images indexed from files).
        A text has ``text``, an image ``uri``; a multimodal document has both (``uri`` is ``None``
        when its image was given in memory).
    metadata : dict
        The stored metadata (less :data:`BATCH_KEY`): ``source``, ``modality``, the caller's
        fields, and for a multimodal
        document the image's ``mime_type`` (e.g. ``"image/jpeg"``) when it could be told.
    """

    id: str
    modality: str
    score: float
    raw_score: float
    rank: int
    text: str | None = None
    uri: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class SearchResult:
    """Hits best first, plus how they were ranked and anything the caller should know.

    Attributes
    ----------
    hits : list of Hit
        The merged ranking, best first.
    method : str
        The fusion method that ranked them.
    query_modality : str
        ``"text"`` or ``"image"``.
    warnings : list of str
        Notes for the caller (an empty modality, corpus growth since calibration, ...).
    """

    hits: list[Hit]
    method: str
    query_modality: str
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_ranking(
        cls,
        fused: FusedRanking,
        hits: Mapping[str, ModalityHits],
        method: str,
        query_modality: str,
        warnings: list[str],
        raw_scores: Mapping[str, list[float]] | None = None,
    ) -> SearchResult:
        """The hits of a single query's merged ranking.

        Parameters
        ----------
        fused : FusedRanking
            One row, fused from ``CandidateBatch.from_hits(hits, ...)``: ids are positions within
            each modality's hit row.
        hits : mapping of str to ModalityHits
            The store's answer the ranking was fused from.
        method, query_modality : str
        warnings : list of str
        raw_scores : mapping of str to list of float, optional
            Each modality's first hit row of scores as Python floats, if the caller has them.

        Returns
        -------
        SearchResult
        """
        ranked = zip(
            fused.ids[0].tolist(), fused.scores[0].tolist(), fused.modality_codes[0].tolist()
        )
        return cls.from_ranked(
            ranked, fused.modalities, hits, method, query_modality, warnings, raw_scores
        )

    @classmethod
    def from_ranked(
        cls,
        ranked: Iterable[tuple[int, float, int]],
        modalities: Sequence[str],
        hits: Mapping[str, ModalityHits],
        method: str,
        query_modality: str,
        warnings: list[str],
        raw_scores: Mapping[str, list[float]] | None = None,
    ) -> SearchResult:
        """The hits of a single query's merged ranking given as plain values.

        Parameters
        ----------
        ranked : iterable of (int, float, int)
            Best first: each item's position in its modality's hit row (``-1`` ends the list),
            its fused score and its modality's index in ``modalities``.
        modalities : sequence of str
        hits, method, query_modality, warnings, raw_scores
            As for :meth:`from_ranking`.

        Returns
        -------
        SearchResult
        """
        # Each modality's first row as plain Python values: iterating numpy scalars costs more
        # than the fusion itself here.
        rows = {
            m: (
                h.ids[0],
                raw_scores[m] if raw_scores is not None else h.scores[0].tolist(),
                h.documents[0],
                h.uris[0],
                h.metadatas[0],
            )
            for m, h in hits.items()
        }
        out = []
        for rank, (pos, score, code) in enumerate(ranked, 1):
            if pos < 0:
                break
            m = modalities[code]
            ids, raw, docs, uris, metas = rows[m]
            meta = dict(metas[pos] or {})
            meta.pop(BATCH_KEY, None)
            out.append(Hit(ids[pos], m, score, raw[pos], rank, docs[pos], uris[pos], meta))
        return cls(out, method, query_modality, warnings)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i):
        return self.hits[i]


@dataclass
class SkippedItem:
    """An input item that was not indexed, and why.

    Attributes
    ----------
    source : str
        The file path, ``"file.jsonl:12"`` for a line of a ``.jsonl`` file, or ``"texts[3]"`` /
        ``"images[7]"`` / ``"documents[2]"`` for in-memory input.
    modality : str
        The modality it would have been stored under.
    reason : str
        Why it was skipped (``"file not found"``, ``"already indexed"``, ...).
    """

    source: str
    modality: str
    reason: str


@dataclass
class IndexReport:
    """What an ``index`` run did: items added per modality, and each skipped item with its reason.

    Attributes
    ----------
    added : dict of str to int
        Items written per modality.
    skipped : list of SkippedItem
        Items not written, with the reason.
    added_ids : list of str
        Ids of the items written, in order.
    """

    added: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedItem] = field(default_factory=list)
    added_ids: list[str] = field(default_factory=list)

    def merge(self, other: IndexReport) -> IndexReport:
        """Add ``other``'s counts, skips and ids to this report (in place) and return it."""
        for m, n in other.added.items():
            self.added[m] = self.added.get(m, 0) + n
        self.skipped.extend(other.skipped)
        self.added_ids.extend(other.added_ids)
        return self

    @property
    def n_added(self) -> int:
        """Items written, all modalities together."""
        return sum(self.added.values())

    def skipped_by_reason(self) -> dict[str, int]:
        """How many items were skipped per reason (the part of the reason before any ``:``)."""
        out: dict[str, int] = {}
        for s in self.skipped:
            key = s.reason.split(":")[0]
            out[key] = out.get(key, 0) + 1
        return out

    @property
    def already_indexed(self) -> dict[str, int]:
        """Items skipped because the store holds them already, per modality."""
        out: dict[str, int] = {}
        for s in self.skipped:
            if s.reason == ALREADY_INDEXED:
                out[s.modality] = out.get(s.modality, 0) + 1
        return out

    def summary(self) -> str:
        """The counts, then one line per skipped item that is not simply already indexed.

        Returns
        -------
        str
            ``"added 3 image, 2 text; skipped 9"``, then ``"  already indexed: 7 (5 text, 2
            image)"`` when re-indexing, then ``"  skipped SOURCE (MODALITY): REASON"`` lines.
        """
        added = ", ".join(f"{n} {m}" for m, n in sorted(self.added.items())) or "nothing"
        lines = [f"added {added}; skipped {len(self.skipped)}"]
        already = self.already_indexed
        if already:
            parts = ", ".join(f"{n} {m}" for m, n in sorted(already.items()))
            lines.append(f"  {ALREADY_INDEXED}: {sum(already.values())} ({parts})")
        lines += [
            f"  skipped {s.source} ({s.modality}): {s.reason}"
            for s in self.skipped
            if s.reason != ALREADY_INDEXED
        ]
        return "\n".join(lines)


def content_id(modality: str, payload: bytes) -> str:
    """Content-addressed id: re-indexing the same text or image bytes gives the same id.

    Parameters
    ----------
    modality : str
        The modality the item is stored under; it prefixes the id.
    payload : bytes
        The text's UTF-8 bytes, or the image file's bytes.

    Returns
    -------
    str
        ``f"{modality}-{sha256(payload)[:32]}"``.
    """
    return f"{modality}-{hashlib.sha256(payload).hexdigest()[:32]}"


def document_id(text: str, image: bytes) -> str:
    """Content id of a multimodal document, from both its parts.

    Parameters
    ----------
    text : str
        The document's text.
    image : bytes
        Its image file's bytes (or, for an in-memory PIL image, its pixels and mode).

    Returns
    -------
    str
        ``content_id("multimodal", ...)`` over the text's length, the text, then the image, so no
        two different (text, image) pairs share a payload.
    """
    data = text.encode("utf-8")
    return content_id("multimodal", len(data).to_bytes(8, "big") + data + bytes(image))
