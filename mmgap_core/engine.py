"""The retrieval engine: index texts and images, calibrate, and search with one merged ranking.

It wires an :class:`~mmgap_core.encoders.base.Encoder` to a
:class:`~mmgap_core.store.base.VectorStore` (one collection per modality) and uses the core math for
calibration and fusion. It names no backend: :mod:`mmgap_core.factory` opens Chroma stores and
open_clip encoders (:func:`open_engine` is re-exported here).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import as_embeddings, check_query, positive_int
from .calibration.fitting import (
    resolve_mining,
    self_excluded_lists,
    check_counts,
    fit_calibration,
    given_query_set,
    sample_query_sets,
)
from .calibration.record import (
    CalibrationRecord,
    NotCalibratedError,
    read_calibration_file,
    write_calibration_file,
)
from .candidates import CandidateBatch
from .encoders.base import Encoder
from .factory import open_engine
from .fusion import DEFAULT_METHOD, FusionMethod, method_class
from .indexing import index_items
from .method_cache import MethodCache
from .results import Hit, IndexReport, SearchResult, SkippedItem, content_id  # noqa: F401
from .stats import ModalityStandardizer
from .store.base import ModalityHits, VectorStore

__all__ = [
    "DEFAULT_K_PER_MODALITY",
    "Hit",
    "IndexReport",
    "NotCalibratedError",
    "RetrievalEngine",
    "SearchResult",
    "SkippedItem",
    "content_id",
    "open_engine",
]

logger = logging.getLogger(__name__)

DEFAULT_K_PER_MODALITY = 50


class RetrievalEngine:
    """Index, calibrate and search a mixed text+image store.

    Parameters
    ----------
    store : VectorStore
        E.g. a :class:`~mmgap_core.store.chroma.ChromaStore`. Indexing needs a
        :class:`~mmgap_core.store.base.WritableVectorStore`.
    encoder : Encoder, optional
        ``None`` for a store searched with precomputed embeddings only.
    growth_warning : float, default 0.5
        When a modality holds more than ``(1 + growth_warning)`` times the items it held at
        calibration time, ``search`` warns (or recalibrates with ``auto_recalibrate``).
    auto_recalibrate : bool, default False
        Recalibrate instead of warning when the corpus grew, or gained a modality, since
        calibration.
    online_calibration : bool, default False
        Update the running statistics with each calibrated search's lists (``partial_fit``: the
        top-1 per modality, the background scales, a ``two-view-z`` search's second view) and
        persist them every ``persist_every`` searches. Off by default: it lets the query stream
        drift the statistics.
    persist_every : int, default 50
    count_check_seconds : float, default 10.0
        How long ``search`` reuses the store's per-modality item counts (and how often it checks
        corpus growth); the engine's own writes refresh them at once, writes by other processes are
        seen within this time. 0 reads the counts on every search.
    """

    def __init__(
        self,
        store: VectorStore,
        encoder: Encoder | None = None,
        *,
        growth_warning: float = 0.5,
        auto_recalibrate: bool = False,
        online_calibration: bool = False,
        persist_every: int = 50,
        count_check_seconds: float = 10.0,
    ):
        if growth_warning <= 0:
            raise ValueError(f"growth_warning must be > 0, got {growth_warning}")
        self.store = store
        self.encoder = encoder
        self.growth_warning = float(growth_warning)
        self.auto_recalibrate = auto_recalibrate
        self.online_calibration = online_calibration
        self.persist_every = positive_int(persist_every, "persist_every")
        self.count_check_seconds = float(count_check_seconds)
        self._lock = threading.Lock()
        self._calibration: CalibrationRecord | None = None
        self._searches_since_persist = 0
        self._counts_checked_at = 0.0
        # (counts, read at, write generation): Chroma count calls cost ~5 ms each at 50k items.
        self._counts_cache: tuple[dict[str, int], float, int] | None = None
        self._writes = 0
        self._last_growth_warning: list[str] = []
        self._methods = MethodCache()  # the last fusion method built, reused while it can be
        data = self.store.load_calibration()
        if data is not None:
            self._set_calibration(CalibrationRecord.from_dict(data))

    # ------------------------------------------------------------------ identity
    @property
    def model_id(self) -> str | None:
        """The encoder's model id, else the store's."""
        return self.encoder.model_id if self.encoder is not None else self.store.model_id

    @property
    def dim(self) -> int | None:
        """The encoder's dimension, else the store's."""
        return self.encoder.dim if self.encoder is not None else self.store.dim

    def _require_encoder(self, what: str) -> Encoder:
        if self.encoder is None:
            raise ValueError(f"{what} needs an encoder; this engine was built without one")
        return self.encoder

    # ------------------------------------------------------------------ indexing
    def index(
        self,
        texts: Sequence[str | bytes] | None = None,
        images: Sequence[Any] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
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
    ) -> IndexReport:
        """Embed and store texts, images and multimodal documents; ids are content hashes.

        Texts are ``str`` (or UTF-8 ``bytes``); images are paths, PIL images or encoded bytes;
        documents are ``{"text": ..., "image": ...}`` (optional ``"metadata"``), stored under the
        modality ``"multimodal"`` as ``normalise(alpha * t + (1 - alpha) * v)``; ``alpha`` defaults
        to the store's recorded one, else 0.5 (the store refuses another). A rerun adds only the
        new; bad items are skipped with a reason in the report; each batch is written whole.
        See :func:`mmgap_core.indexing.index_items`.

        Returns
        -------
        IndexReport
        """
        encoder = self._require_encoder("index")
        if getattr(self.store, "read_only", False):
            raise TypeError(f"{self.store!r} is read-only: index into it with its own library")
        items = [list(texts or []), list(images or []), list(documents or [])]
        return index_items(
            self.store, encoder, *items, text_metadatas=text_metadatas,
            image_metadatas=image_metadatas, document_metadatas=document_metadatas,
            text_sources=text_sources, image_sources=image_sources,
            document_sources=document_sources, alpha=alpha, progress=progress,
            batch_size=positive_int(batch_size, "batch_size"), on_write=self._written,
        )  # fmt: skip

    def _written(self, _ids: list[str]) -> None:
        self._writes += 1  # invalidates the cached counts (index_items records the encoder spec)

    # ------------------------------------------------------------------ calibration
    @property
    def standardizer(self) -> ModalityStandardizer | None:
        """The fitted statistics, or ``None`` before calibration."""
        return None if self._calibration is None else self._calibration.standardizer

    @property
    def calibration(self) -> CalibrationRecord | None:
        """The current calibration record, or ``None``."""
        return self._calibration

    @property
    def is_calibrated(self) -> bool:
        return self._calibration is not None

    def _set_calibration(self, record: CalibrationRecord) -> None:
        record.check_compatible(self.model_id, self.dim)
        self._calibration = record

    def calibration_data(self) -> dict | None:
        """The calibration as its JSON-safe ``mmgap.calibration`` dict, or ``None``."""
        return None if self._calibration is None else self._calibration.to_dict()

    def export_calibration(self, path) -> Path:
        """Write the calibration to a JSON file; returns its path."""
        if self._calibration is None:
            raise NotCalibratedError(self._not_calibrated_message())
        return write_calibration_file(self._calibration, path)

    def import_calibration(self, path) -> None:
        """Load calibration from a JSON file, check it against this model and store it.

        Raises
        ------
        CalibrationFormatError
            When the file is unreadable or breaks the schema; nothing is stored then.
        ValueError
            When it was fitted for another model or dimension.
        """
        record = read_calibration_file(path)
        record.check_compatible(self.model_id, self.dim)
        self._store_calibration(record)

    def _not_calibrated_message(self) -> str:
        return (
            "this store is not calibrated yet: run `mmgap calibrate` (or engine.calibrate()) after "
            "indexing, or search with method='raw'"
        )

    def calibrate(
        self,
        queries: Sequence[str] | np.ndarray | None = None,
        *,
        query_modality: str = "text",
        sample: int = 1000,
        query_modalities: Sequence[str] | None = None,
        mining: str = "exact",
        exact_max_items: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> ModalityStandardizer:
        """Fit the statistics from pseudo-positives and store them with the store.

        Calibration queries are, in order of preference: the ``queries`` given (texts to embed, or
        an embedding matrix of ``query_modality``); otherwise a sample of ``sample`` items of each
        of ``query_modalities`` (default: every modality in the store) drawn from the store itself,
        each excluded from its own candidates. ``mining="exact"`` (the default) streams the
        store's embeddings in chunks and mines exactly, in bounded memory (256 MiB) at any size;
        ``mining="store-index"`` uses the store's approximate index and records its measured top-1
        agreement with exact mining in the provenance. ``exact_max_items`` is deprecated (a
        ``FutureWarning``): when given, stores larger than it use ``"store-index"``.

        Returns
        -------
        ModalityStandardizer
            The fitted statistics (the whole record is :attr:`calibration`).
        """
        counts = self.store.counts()
        check_counts(counts)
        mining = resolve_mining(mining, exact_max_items, sum(counts.values()))
        if queries is not None:
            qs = given_query_set(queries, self.encoder, self.store.dim, progress)
            query_sets = {query_modality: qs}
        else:
            query_sets = sample_query_sets(self.store, counts, sample, query_modalities, seed)
        record = fit_calibration(
            self.store,
            query_sets,
            counts=counts,
            model_id=self.model_id,
            dim=self.dim,
            mining=mining,
            seed=seed,
            progress=progress,
        )
        self._store_calibration(record)
        return record.standardizer

    def _store_calibration(self, record: CalibrationRecord) -> None:
        with self._lock:
            self.store.save_calibration(record.to_dict())
            self._calibration = record
            self._last_growth_warning = []

    def persist_calibration(self) -> None:
        """Write the current (possibly online-updated) statistics to the store."""
        if self._calibration is None:
            raise NotCalibratedError(self._not_calibrated_message())
        self.store.save_calibration(self._calibration.to_dict())
        self._searches_since_persist = 0

    # ------------------------------------------------------------------ search
    def embed_query(self, text: str | None = None, image=None) -> tuple[np.ndarray, str]:
        """(query vector, query modality) from exactly one of ``text`` and ``image``."""
        check_query(text, image)
        encoder = self._require_encoder("searching by text or image")
        if text is not None:
            return encoder.embed_query_text(text), "text"
        return encoder.embed_query_image(image), "image"

    def search(
        self,
        text: str | None = None,
        image=None,
        *,
        embedding: np.ndarray | None = None,
        query_modality: str | None = None,
        k: int = 10,
        k_per_modality: int | None = None,
        where: Mapping[str, Any] | None = None,
        method: str = DEFAULT_METHOD,
        modalities: Sequence[str] | None = None,
    ) -> SearchResult:
        """One merged, calibrated ranking over every modality.

        Give ``text=``, ``image=`` (path, PIL image or bytes), or a precomputed ``embedding=`` with
        its ``query_modality``. Each modality's collection is queried (concurrently) for
        ``k_per_modality`` candidates (default ``max(k, 50)``), the scores are made comparable with
        ``method`` (any fusion method of the core, default ``two-view-z``; see
        :func:`mmgap_core.fusion.method_help`), and the top ``k`` are returned.

        Returns
        -------
        SearchResult
        """
        k = positive_int(k, "k")
        if k_per_modality is not None:
            k_per_modality = positive_int(k_per_modality, "k_per_modality")
        kpm = k_per_modality or max(k, DEFAULT_K_PER_MODALITY)
        if embedding is not None:
            if text is not None or image is not None:
                raise ValueError("give either embedding= or text=/image=, not both")
            qmod = query_modality or "text"
        else:
            check_query(text, image)
            qmod = "image" if text is None and image is not None else "text"
        # Everything that needs no model is checked before the query is embedded.
        asked, record = method, self._calibration
        method = method if record is None else record.usable_method(method, qmod)
        method_cls = method_class(method)
        self._check_calibrated(method_cls, method, qmod)
        if embedding is not None:
            vec = as_embeddings(embedding, "query embedding", dim=self.store.dim, allow_1d=True)
            if vec.shape[0] != 1:
                raise ValueError(f"query embedding: expected one vector, got {vec.shape[0]} rows")
        else:
            v, qmod = self.embed_query(text, image)
            vec = v.reshape(1, -1)
        notes = []
        if method != asked:
            notes.append(f"ranked by {method}: the calibration predates {asked}; recalibrate")
        counts = self._counts_for_search(notes)
        mods = list(modalities) if modalities is not None else list(counts)
        for m in mods:
            if m not in counts:
                raise ValueError(f"unknown modality {m!r}; store modalities: {sorted(counts)}")
        live = [m for m in mods if counts.get(m, 0) > 0]
        for m in mods:
            if counts.get(m, 0) == 0:
                notes.append(f"modality {m!r} holds no items; searched the others")
        if not live:
            raise ValueError("the store is empty: index texts and images before searching")
        fuser = self._fuser(method_cls, method, qmod, live, notes, counts)
        ks = {m: min(kpm, counts[m]) for m in live}
        hits = self.store.query_per_modality(
            vec, ks, where=where, include_embeddings=fuser.needs_candidate_embeddings
        )
        raw = {m: h.scores[0].tolist() for m, h in hits.items()}
        embs = {m: h.embeddings[0] for m, h in hits.items() if h.embeddings is not None} or None
        ranked = fuser.fuse_one(raw, qmod, k, query=vec[0], embeddings=embs)  # a shortcut, if any
        if ranked is not None:
            result = SearchResult.from_ranked(ranked, list(hits), hits, method, qmod, notes, raw)
        else:
            fused = fuser.fuse(CandidateBatch.from_hits(hits, qmod, vec), k)
            result = SearchResult.from_ranking(fused, hits, method, qmod, notes, raw)
        # A filtered search sees a subset of the corpus: it would bias the running statistics.
        uses_stats = fuser.needs_standardizer or fuser.needs_background_scale
        if self.online_calibration and uses_stats and where is None:
            self._online_update(hits, qmod, counts, vec[0], embs)
        return result

    def _counts_for_search(self, notes: list[str]) -> dict[str, int]:
        now = time.monotonic()
        record = self._calibration
        check_growth = (
            record is not None and now - self._counts_checked_at >= self.count_check_seconds
        )
        cached = self._counts_cache
        if (
            cached is not None
            and not check_growth
            and cached[2] == self._writes
            and now - cached[1] < self.count_check_seconds
        ):
            counts = cached[0]
        else:
            generation = self._writes  # read first: a write landing during counts() invalidates
            counts = self.store.counts()
            self._counts_cache = (counts, now, generation)
        if record is None:
            return counts
        if check_growth:
            self._counts_checked_at = now
            grown = self._last_growth_warning = record.grown(counts, self.growth_warning)
            if grown and self.auto_recalibrate:
                self.calibrate(progress=False)
                notes.append(
                    f"recalibrated: the corpus grew since calibration ({'; '.join(grown)})"
                )
                self._last_growth_warning = []
            elif grown:
                msg = (
                    f"the corpus grew by more than {self.growth_warning:.0%} since calibration "
                    f"({'; '.join(grown)}); run `mmgap calibrate` again or pass "
                    "auto_recalibrate=True"
                )
                warnings.warn(msg, UserWarning, stacklevel=3)
        if self._last_growth_warning:
            notes.append("corpus grew since calibration: " + "; ".join(self._last_growth_warning))
        return counts

    def _check_calibrated(self, cls: type[FusionMethod], method: str, qmod: str) -> None:
        """Raise when ``method`` needs calibration that is not there (before any model work)."""
        if cls.needs_gold_standardizer:
            raise ValueError(f"{method} needs labelled pairs: it exists for `mmgap eval` only")
        if cls.needs_standardizer or cls.needs_center_means or cls.needs_background_scale:
            if self._calibration is None:
                raise NotCalibratedError(self._not_calibrated_message())
            self._calibration.check_method(cls, method, qmod)

    def _fuser(
        self,
        cls: type[FusionMethod],
        method: str,
        qmod: str,
        live: list[str],
        notes: list[str],
        counts: Mapping[str, int],
    ) -> FusionMethod:
        """``method`` built from the calibration, recalibrating first for a modality it lacks
        (where allowed); see :meth:`_check_calibrated`."""
        record = self._calibration
        needs_stats = cls.needs_standardizer or cls.needs_background_scale
        missing = record.missing_candidates(qmod, live, cls) if needs_stats else []
        if missing and self.auto_recalibrate:
            self.calibrate(progress=False)
            record = self._calibration
            notes.append(f"recalibrated: the store gained modality {missing} since calibration")
        elif missing:
            raise NotCalibratedError(
                f"the calibration has no statistics for {missing} items (the store gained them "
                "after calibration): run `mmgap calibrate` (or engine.calibrate()) again, or pass "
                "auto_recalibrate=True"
            )
        return self._methods.get(method, cls, record, counts)

    def _online_update(
        self, hits: dict[str, ModalityHits], qmod: str, counts: Mapping[str, int], query, embeddings
    ) -> None:
        """Add this search's lists (with ``embeddings``, its second view) to the statistics."""
        lists = self_excluded_lists(hits)
        with self._lock:
            if not self._calibration.add_search(
                lists, qmod, counts, query=query, embeddings=embeddings
            ):
                return
            self._searches_since_persist += 1
            if self._searches_since_persist >= self.persist_every:
                self.persist_calibration()

    # ------------------------------------------------------------------ inspection
    def compare(
        self, text=None, image=None, *, k: int = 10, **kw
    ) -> tuple[SearchResult, SearchResult]:
        """(raw ranking, calibrated ranking) for the same query.

        ``method`` in ``kw`` picks the calibrated side (default :data:`DEFAULT_METHOD`).
        """
        method = kw.pop("method", DEFAULT_METHOD)
        raw = self.search(text, image, k=k, method="raw", **kw)
        cal = self.search(text, image, k=k, method=method, **kw)
        return raw, cal
