"""The retrieval engine: index texts and images, calibrate, and search with one merged, calibrated ranking.

It wires an :class:`~mmgap_core.encoders.Encoder` to a store (one collection per modality, see
:class:`~mmgap_core.store.chroma.ChromaStore`) and uses the core math for calibration and fusion.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import as_embeddings
from .fusion import CandidateBatch, ModalityCandidates, make_method
from .mining import mine_pseudo_positives
from .stats import ModalityStandardizer

CALIBRATION_FORMAT = "mmgap.calibration"
CALIBRATION_VERSION = 1
DEFAULT_K_PER_MODALITY = 50
# Beyond this many candidate rows, calibration mines through the store's own nearest-neighbour index.
DEFAULT_EXACT_MAX_ITEMS = 200_000
MEANS_SAMPLE = 20_000  # items per modality behind the `center` means when mining goes through the store


class NotCalibratedError(ValueError):
    """The store has no calibration statistics yet."""


@dataclass
class Hit:
    """One merged search result."""

    id: str
    modality: str
    score: float  # calibrated score (z for `standardize`); comparable across modalities
    raw_score: float  # cosine similarity
    rank: int
    text: str | None = None
    uri: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class SearchResult:
    """Hits best first, plus how they were ranked and anything the caller should know."""

    hits: list[Hit]
    method: str
    query_modality: str
    warnings: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.hits)

    def __len__(self):
        return len(self.hits)

    def __getitem__(self, i):
        return self.hits[i]


@dataclass
class SkippedItem:
    source: str  # the file path, or "texts[3]" / "images[7]" for in-memory input
    modality: str
    reason: str


@dataclass
class IndexReport:
    """What an `index` run did: items added per modality, and each skipped item with its reason."""

    added: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedItem] = field(default_factory=list)
    added_ids: list[str] = field(default_factory=list)

    def merge(self, other: IndexReport) -> IndexReport:
        for m, n in other.added.items():
            self.added[m] = self.added.get(m, 0) + n
        self.skipped.extend(other.skipped)
        self.added_ids.extend(other.added_ids)
        return self

    @property
    def n_added(self) -> int:
        return sum(self.added.values())

    def skipped_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.skipped:
            key = s.reason.split(":")[0]
            out[key] = out.get(key, 0) + 1
        return out

    def summary(self) -> str:
        added = ", ".join(f"{n} {m}" for m, n in sorted(self.added.items())) or "nothing"
        lines = [f"added {added}; skipped {len(self.skipped)}"]
        lines += [f"  skipped {s.source} ({s.modality}): {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def content_id(modality: str, payload: bytes) -> str:
    """Content-addressed id: re-indexing the same text or image bytes gives the same id."""
    return f"{modality}-{hashlib.sha256(payload).hexdigest()[:32]}"


def _image_source(img, i: int) -> str:
    return os.fspath(img) if isinstance(img, (str, os.PathLike)) else f"images[{i}]"


class RetrievalEngine:
    """Index, calibrate and search a mixed text+image store.

    Parameters
    ----------
    store : a :class:`~mmgap_core.store.chroma.ChromaStore` (or anything with its API).
    encoder : an :class:`~mmgap_core.encoders.Encoder`; may be ``None`` for a store searched with
        precomputed embeddings only.
    growth_warning : when a modality holds more than ``(1 + growth_warning)`` times the items it held at
        calibration time, `search` warns (or recalibrates with ``auto_recalibrate``).
    online_calibration : update the running statistics with each search's top-1 per modality
        (``partial_fit``) and persist them every ``persist_every`` searches. Off by default: it lets the
        query stream drift the statistics.
    count_check_seconds : how long `search` reuses the store's per-modality item counts (and how often it
        checks corpus growth); the engine's own writes refresh them at once, writes by other processes
        are seen within this time. 0 reads the counts on every search.
    """

    def __init__(
        self,
        store,
        encoder=None,
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
        self.persist_every = int(persist_every)
        self.count_check_seconds = float(count_check_seconds)
        self._lock = threading.Lock()
        self._calibration: dict | None = None
        self._standardizer: ModalityStandardizer | None = None
        self._searches_since_persist = 0
        self._counts_checked_at = 0.0
        # (counts, read at, write generation): Chroma count calls cost ~5 ms each at 50k items.
        self._counts_cache: tuple[dict[str, int], float, int] | None = None
        self._writes = 0
        self._last_growth_warning: list[str] = []
        self._spec_recorded = False
        self._load_calibration()

    # ------------------------------------------------------------------ identity
    @property
    def model_id(self) -> str | None:
        if self.encoder is not None:
            return self.encoder.model_id
        return self.store.model_id

    @property
    def dim(self) -> int | None:
        if self.encoder is not None:
            return self.encoder.dim
        return self.store.dim

    def _require_encoder(self, what: str):
        if self.encoder is None:
            raise ValueError(f"{what} needs an encoder; this engine was built without one")
        return self.encoder

    # ------------------------------------------------------------------ indexing
    def index(
        self,
        texts: Sequence[str | bytes] | None = None,
        images: Sequence[Any] | None = None,
        *,
        text_metadatas: Sequence[Mapping] | None = None,
        image_metadatas: Sequence[Mapping] | None = None,
        text_sources: Sequence[str] | None = None,
        batch_size: int = 64,
        progress: bool = True,
    ) -> IndexReport:
        """Embed and store texts and images. Ids are content hashes, so a rerun adds only what is missing.

        Texts are ``str`` (or UTF-8 ``bytes``); images are paths, PIL images or encoded bytes. Bad items
        are skipped with a reason in the returned report; the rest is indexed. Each batch is written as a
        whole, so an interrupted run leaves complete items only.
        """
        from tqdm.auto import tqdm

        encoder = self._require_encoder("index")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        report = IndexReport()
        texts = list(texts or [])
        images = list(images or [])
        for name, meta, items in (("text", text_metadatas, texts), ("image", image_metadatas, images)):
            if meta is not None and len(meta) != len(items):
                raise ValueError(f"{name}_metadatas: {len(meta)} entries for {len(items)} {name}s")
        if text_sources is not None and len(text_sources) != len(texts):
            raise ValueError(f"text_sources: {len(text_sources)} entries for {len(texts)} texts")
        total = len(texts) + len(images)
        with tqdm(total=total, desc="indexing", unit="item", disable=not progress) as bar:
            for s in range(0, len(texts), batch_size):
                chunk = texts[s : s + batch_size]
                srcs = text_sources[s : s + batch_size] if text_sources else None
                meta = text_metadatas[s : s + batch_size] if text_metadatas else None
                report.merge(self._index_texts(encoder, chunk, s, srcs, meta))
                bar.update(len(chunk))
            for s in range(0, len(images), batch_size):
                chunk = images[s : s + batch_size]
                meta = image_metadatas[s : s + batch_size] if image_metadatas else None
                report.merge(self._index_images(encoder, chunk, s, meta))
                bar.update(len(chunk))
        return report

    def _index_texts(self, encoder, chunk, offset, sources, metas) -> IndexReport:
        report = IndexReport()
        keep, ids, docs, metadatas = [], [], [], []
        seen: dict[str, str] = {}
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
            cid = content_id("text", t.encode("utf-8"))
            if cid in seen:
                report.skipped.append(SkippedItem(src, "text", f"duplicate of {seen[cid]}"))
                continue
            seen[cid] = src
            keep.append(t)
            ids.append(cid)
            docs.append(t)
            m = dict(metas[j]) if metas else {}
            m.setdefault("source", src)
            metadatas.append(m)
        self._write(encoder, "text", keep, ids, metadatas, report, documents=docs,
                    sources=[m["source"] for m in metadatas])
        return report

    def _index_images(self, encoder, chunk, offset, metas) -> IndexReport:
        report = IndexReport()
        payloads, ids, uris, metadatas, srcs = [], [], [], [], []
        seen: dict[str, str] = {}
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
                uri, payload = str(path.resolve()), data  # the encoder decodes these bytes: one read
            elif isinstance(img, (bytes, bytearray)):
                data = payload = bytes(img)
            else:  # a PIL image: hash its pixels
                try:
                    data = img.tobytes() + repr((img.mode, img.size)).encode()
                except Exception as exc:
                    report.skipped.append(
                        SkippedItem(src, "image", f"unsupported input {type(img).__name__}: {exc}")
                    )
                    continue
            cid = content_id("image", data)
            if cid in seen:
                report.skipped.append(SkippedItem(src, "image", f"duplicate of {seen[cid]}"))
                continue
            seen[cid] = src
            payloads.append(payload)
            ids.append(cid)
            uris.append(uri)
            m = dict(metas[j]) if metas else {}
            m.setdefault("source", src)
            metadatas.append(m)
            srcs.append(src)
        self._write(encoder, "image", payloads, ids, metadatas, report, uris=uris, sources=srcs)
        return report

    def _write(self, encoder, modality, items, ids, metadatas, report, *, documents=None, uris=None,
               sources=None) -> None:
        if not items:
            return
        existing = self.store.existing_ids(modality, ids)
        todo = [i for i, cid in enumerate(ids) if cid not in existing]
        for i, cid in enumerate(ids):
            if cid in existing:
                report.skipped.append(SkippedItem(sources[i], modality, "already indexed"))
        if not todo:
            return
        embed = encoder.embed_texts if modality == "text" else encoder.embed_images
        emb = embed([items[i] for i in todo], progress=False)
        for pos, reason in sorted(emb.failures.items()):
            report.skipped.append(SkippedItem(sources[todo[pos]], modality, reason))
        if len(emb) == 0:
            return
        rows = [todo[p] for p in emb.indices.tolist()]
        res = self.store.add(
            modality,
            [ids[i] for i in rows],
            emb.vectors,
            documents=[documents[i] for i in rows] if documents is not None else None,
            uris=[uris[i] for i in rows] if uris is not None else None,
            metadatas=[metadatas[i] for i in rows],
            model_id=emb.model_id,
        )
        if res.added:
            self._writes += 1  # invalidates the cached counts
        if res.added and self._spec_recorded is False:
            spec = encoder_spec(encoder)
            if spec is not None:
                self.store.update_manifest(encoder=spec)
            self._spec_recorded = True
        report.added[modality] = report.added.get(modality, 0) + len(res.added)
        report.added_ids.extend(res.added)
        source_of = {ids[i]: sources[i] for i in rows}
        for cid, reason in res.skipped.items():
            report.skipped.append(SkippedItem(source_of.get(cid, cid), modality, reason))

    # ------------------------------------------------------------------ calibration
    @property
    def standardizer(self) -> ModalityStandardizer | None:
        return self._standardizer

    @property
    def is_calibrated(self) -> bool:
        return self._standardizer is not None

    def _load_calibration(self) -> None:
        data = self.store.load_calibration()
        if data is None:
            return
        self._set_calibration(data, check=True)

    def _set_calibration(self, data: dict, *, check: bool) -> None:
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise ValueError("not mmgap calibration data (expected format 'mmgap.calibration')")
        if data.get("version") != CALIBRATION_VERSION:
            raise ValueError(
                f"calibration data has version {data.get('version')!r}; this mmgap reads "
                f"version {CALIBRATION_VERSION}"
            )
        std = ModalityStandardizer.from_dict(data["standardizer"])
        if check:
            std.check_compatible(self.model_id, self.dim)
        self._calibration = data
        self._standardizer = std

    def calibration_data(self) -> dict | None:
        """The stored calibration (JSON-safe), including the statistics and corpus sizes at fit time."""
        if self._calibration is None:
            return None
        data = dict(self._calibration)
        data["standardizer"] = self._standardizer.to_dict()
        return data

    def export_calibration(self, path) -> Path:
        from .jsonio import write_json

        data = self.calibration_data()
        if data is None:
            raise NotCalibratedError(self._not_calibrated_message())
        return write_json(path, data)

    def import_calibration(self, path) -> None:
        """Load calibration from a JSON file (checked against this model and dimension) and store it."""
        import json

        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read calibration file {path}: {exc}") from exc
        self._set_calibration(data, check=True)
        self.store.save_calibration(self.calibration_data())

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
        exact_max_items: int = DEFAULT_EXACT_MAX_ITEMS,
        seed: int = 0,
        progress: bool = True,
    ) -> ModalityStandardizer:
        """Fit the statistics from pseudo-positives and store them with the store.

        Calibration queries are, in order of preference: the ``queries`` given (texts to embed, or an
        embedding matrix of ``query_modality``); otherwise a sample of ``sample`` items of each of
        ``query_modalities`` (default: every modality in the store) drawn from the store itself, each
        excluded from its own candidates. Mining is exact in memory when the store holds at most
        ``exact_max_items`` items, else it goes through the store's nearest-neighbour queries.
        """
        counts = self.store.counts()
        empty = [m for m, n in counts.items() if n == 0]
        if not counts or all(n == 0 for n in counts.values()):
            raise ValueError("the store is empty: index texts and images before calibrating")
        if empty:
            raise ValueError(f"cannot calibrate: modality {empty} holds no items; index some first")
        # Per query modality: (query embeddings, the store ids they are, or None)
        query_sets: dict[str, tuple[np.ndarray, list[str] | None]] = {}
        if queries is not None:
            if isinstance(queries, np.ndarray):
                emb = as_embeddings(queries, "calibration queries", dim=self.store.dim)
            else:
                qs = list(queries)
                if not qs:
                    raise ValueError("calibration queries: empty list")
                encoder = self._require_encoder("calibrating from query texts")
                es = encoder.embed_texts(qs, progress=progress)
                if len(es) == 0:
                    raise ValueError(f"calibration queries: none could be embedded ({es.failures})")
                emb = es.vectors
            query_sets[query_modality] = (emb, None)
        else:
            if sample < 2:
                raise ValueError(f"sample must be >= 2, got {sample}")
            for qm in query_modalities or list(counts):
                if qm not in counts:
                    raise ValueError(f"unknown query modality {qm!r}; store modalities: {sorted(counts)}")
                ids, _docs, emb = self.store.sample_documents(qm, sample, seed)
                query_sets[qm] = (emb, list(ids))

        exact = sum(counts.values()) <= exact_max_items
        # Exact mining reads the corpus once for every query modality and for the means.
        corpus = self._load_corpus() if exact else None
        std = ModalityStandardizer(model_id=self.model_id, dim=self.dim)
        for qm, (emb, self_ids) in query_sets.items():
            if corpus is not None:
                scores, labels = self._mine_exact(corpus, emb, self_ids)
            else:
                scores, labels = self._mine_through_store(emb, self_ids, progress)
            std.partial_fit(scores, labels, qm)
            missing = sorted(set(counts) - set(std.candidate_modalities(qm)))
            if missing:
                # Happens when a modality's only items are the (self-excluded) queries themselves.
                raise ValueError(
                    f"calibration found no pseudo-positive {missing} candidate for any {qm} query "
                    f"(store holds {counts}); index more items or pass calibration queries"
                )
        means = self._modality_means(corpus)
        data = {
            "format": CALIBRATION_FORMAT,
            "version": CALIBRATION_VERSION,
            "model_id": self.model_id,
            "dim": self.dim,
            "standardizer": std.to_dict(),
            "corpus_sizes": counts,
            "center_means": {m: v.tolist() for m, v in means.items()} if means else None,
            "calibration_queries": {qm: int(e.shape[0]) for qm, (e, _) in query_sets.items()},
            "source": "given queries" if queries is not None else "store sample (self-excluded)",
            "mining": "exact" if exact else "store nearest-neighbour",
            "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with self._lock:
            self.store.save_calibration(data)
            self._calibration = data
            self._standardizer = std
            self._last_growth_warning = []
        return std

    def _load_corpus(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        embs, labels, ids = [], [], []
        for m in self.store.modalities():
            for batch_ids, e in self.store.iter_embeddings(m):
                embs.append(e)
                labels.extend([m] * len(batch_ids))
                ids.extend(batch_ids)
        return np.concatenate(embs), np.asarray(labels), ids

    def _mine_exact(self, corpus, queries: np.ndarray, self_ids: list[str] | None):
        vectors, labels, ids = corpus
        exclude = None
        if self_ids is not None:
            row = {cid: i for i, cid in enumerate(ids)}
            exclude = np.asarray([row.get(cid, -1) for cid in self_ids], dtype=np.int64)
        return mine_pseudo_positives(queries, vectors, labels, exclude=exclude).pairs()

    def _mine_through_store(self, queries: np.ndarray, self_ids: list[str] | None, progress: bool):
        from tqdm.auto import tqdm

        scores, labels = [], []
        batch = 256
        # The store's HNSW index is approximate (see benchmarks/README.md for how often it misses the
        # exact top-1); one extra neighbour so the query itself can be dropped.
        k = 1 + (self_ids is not None)
        for s in tqdm(range(0, queries.shape[0], batch), desc="calibrating", disable=not progress):
            hits = self.store.query_modalities(queries[s : s + batch], k)
            for m, h in hits.items():
                for r, row_ids in enumerate(h.ids):
                    for j, cid in enumerate(row_ids):
                        if self_ids is not None and cid == self_ids[s + r]:
                            continue
                        scores.append(float(h.scores[r, j]))
                        labels.append(m)
                        break
        return np.asarray(scores), np.asarray(labels)

    def _modality_means(self, corpus=None) -> dict[str, np.ndarray]:
        """Mean embedding per modality (for `center`): exact from a loaded corpus, else estimated from a
        sample of the store (reading every embedding back from a large store costs more than mining)."""
        if corpus is not None:
            vectors, labels, _ids = corpus
            return {m: vectors[labels == m].mean(axis=0, dtype=np.float64) for m in np.unique(labels)}
        means = {}
        for m in self.store.modalities():
            _ids, _docs, emb = self.store.sample_documents(m, MEANS_SAMPLE, 0)
            if emb.shape[0]:
                means[m] = emb.mean(axis=0, dtype=np.float64)
        return means

    # ------------------------------------------------------------------ search
    def embed_query(self, text: str | None = None, image=None) -> tuple[np.ndarray, str]:
        """(query vector, query modality) from exactly one of ``text`` and ``image``."""
        if (text is None) == (image is None):
            raise ValueError("give exactly one of text= or image=")
        encoder = self._require_encoder("searching by text or image")
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise ValueError("empty query: give a non-empty text")
            return encoder.embed_query_text(text), "text"
        if isinstance(image, (str, os.PathLike)) and not Path(image).exists():
            raise ValueError(f"query image not found: {image}")
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
        method: str = "standardize",
        modalities: Sequence[str] | None = None,
    ) -> SearchResult:
        """One merged, calibrated ranking over every modality.

        Give ``text=``, ``image=`` (path, PIL image or bytes), or a precomputed ``embedding=`` with its
        ``query_modality``. Each modality's collection is queried (concurrently) for
        ``k_per_modality`` candidates (default ``max(k, 50)``), the scores are made comparable with
        ``method`` (any fusion method of the core; ``standardize`` is the calibrated one), and the
        top ``k`` are returned.
        """
        if embedding is not None:
            if text is not None or image is not None:
                raise ValueError("give either embedding= or text=/image=, not both")
            vec = as_embeddings(np.asarray(embedding, dtype=np.float32).reshape(1, -1), "query embedding",
                                dim=self.store.dim)
            qmod = query_modality or "text"
        else:
            v, qmod = self.embed_query(text, image)
            vec = v.reshape(1, -1)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        kpm = int(k_per_modality or max(k, DEFAULT_K_PER_MODALITY))
        notes = []
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
        fuser = self._fuser(method, qmod)
        hits = self.store.query_modalities(
            vec, {m: min(kpm, counts[m]) for m in live}, where=where, include_embeddings=method == "center"
        )
        result = self._merge(hits, fuser, vec, qmod, k, method, notes)
        if self.online_calibration and method == "standardize":
            self._online_update(hits, qmod)
        return result

    def _counts_for_search(self, notes: list[str]) -> dict[str, int]:
        now = time.monotonic()
        check_growth = (
            self._calibration is not None
            and now - self._counts_checked_at >= self.count_check_seconds
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
        if self._calibration is None:
            return counts
        if check_growth:
            self._counts_checked_at = now
            fitted = self._calibration.get("corpus_sizes") or {}
            grown = [
                f"{m}: {fitted.get(m, 0)} -> {n}"
                for m, n in counts.items()
                if n > (1 + self.growth_warning) * max(fitted.get(m, 0), 1)
            ]
            self._last_growth_warning = grown
            if grown and self.auto_recalibrate:
                self.calibrate(progress=False)
                notes.append(f"recalibrated: the corpus grew since calibration ({'; '.join(grown)})")
                self._last_growth_warning = []
            elif grown:
                msg = (
                    f"the corpus grew by more than {self.growth_warning:.0%} since calibration "
                    f"({'; '.join(grown)}); run `mmgap calibrate` again or pass auto_recalibrate=True"
                )
                warnings.warn(msg, UserWarning, stacklevel=3)
        if self._last_growth_warning:
            notes.append("corpus grew since calibration: " + "; ".join(self._last_growth_warning))
        return counts

    def _fuser(self, method: str, query_modality: str):
        if method in ("standardize", "standardize-gold") and self._standardizer is None:
            raise NotCalibratedError(self._not_calibrated_message())
        if method == "standardize-gold":
            raise ValueError("standardize-gold needs labelled pairs: it exists for `mmgap eval` only")
        center_means = None
        if method == "center":
            if not self._calibration or not self._calibration.get("center_means"):
                raise NotCalibratedError(self._not_calibrated_message())
            center_means = {m: np.asarray(v) for m, v in self._calibration["center_means"].items()}
        if method == "standardize":
            fitted = self._standardizer.query_modalities()
            if query_modality not in fitted:
                raise NotCalibratedError(
                    f"no statistics for {query_modality} queries (calibrated for {fitted}); run "
                    f"`mmgap calibrate --query-modalities {query_modality}`"
                )
        return make_method(method, standardizer=self._standardizer, center_means=center_means)

    def _merge(self, hits, fuser, vec, qmod, k, method, notes) -> SearchResult:
        lists, emb = {}, {}
        for m, h in hits.items():
            n = len(h.ids[0])
            ids = np.where(np.arange(h.k) < n, np.arange(h.k), -1)[None, :]
            lists[m] = ModalityCandidates(ids, np.where(ids >= 0, h.scores[:, : h.k], 0.0))
            emb[m] = h.embeddings
        batch = CandidateBatch(
            qmod,
            lists,
            query_embeddings=vec,
            candidate_embeddings=lambda m, ids: emb[m][:, : ids.shape[1]],
        )
        fused = fuser.fuse(batch, k)
        raw = {m: h.scores[0].tolist() for m, h in hits.items()}
        out = []
        # Plain Python values: iterating numpy scalars costs more than the fusion itself here.
        for rank, (pos, score, code) in enumerate(
            zip(fused.ids[0].tolist(), fused.scores[0].tolist(), fused.modality_codes[0].tolist()), 1
        ):
            if pos < 0:
                break
            m = fused.modalities[code]
            h = hits[m]
            out.append(
                Hit(
                    id=h.ids[0][pos],
                    modality=m,
                    score=score,
                    raw_score=raw[m][pos],
                    rank=rank,
                    text=h.documents[0][pos],
                    uri=h.uris[0][pos],
                    metadata=dict(h.metadatas[0][pos] or {}),
                )
            )
        return SearchResult(out, method, qmod, notes)

    def _online_update(self, hits, qmod: str) -> None:
        scores, labels = [], []
        for m, h in hits.items():
            if h.ids[0]:
                scores.append(float(h.scores[0, 0]))
                labels.append(m)
        if not scores:
            return
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self._standardizer.partial_fit(np.asarray(scores), labels, qmod)
            self._searches_since_persist += 1
            if self._searches_since_persist >= self.persist_every:
                self.persist_calibration()

    def persist_calibration(self) -> None:
        """Write the current (possibly online-updated) statistics to the store."""
        data = self.calibration_data()
        if data is None:
            raise NotCalibratedError(self._not_calibrated_message())
        self.store.save_calibration(data)
        self._calibration = data
        self._searches_since_persist = 0

    # ------------------------------------------------------------------ inspection
    def compare(self, text=None, image=None, *, k: int = 10, **kw) -> tuple[SearchResult, SearchResult]:
        """(raw ranking, calibrated ranking) for the same query."""
        raw = self.search(text, image, k=k, method="raw", **kw)
        cal = self.search(text, image, k=k, method="standardize", **kw)
        return raw, cal



DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


def encoder_spec(encoder) -> dict | None:
    """How to rebuild ``encoder`` later (recorded in the store), or None for a non-open_clip encoder."""
    if type(encoder).__name__ != "OpenClipEncoder":
        return None
    cfg = getattr(encoder, "model_config", None)
    return {
        "kind": "open_clip",
        "model_name": encoder.model_name,
        "pretrained": None if encoder.pretrained is None else str(encoder.pretrained),
        "model_config": None if cfg is None else str(cfg),
    }


def open_store(db=None, *, host: str | None = None, port: int | None = None, name: str = "mmgap"):
    """A :class:`ChromaStore`: on a ``chroma run`` server when ``host`` is given, else embedded at ``db``."""
    from .store.chroma import ChromaStore

    if host:
        return ChromaStore.http(host, int(port or 8000), name)
    return ChromaStore.persistent(Path(db or "mmgap-db"), name)


def open_engine(
    db=None,
    *,
    host: str | None = None,
    port: int | None = None,
    name: str = "mmgap",
    model: str | None = None,
    pretrained: str | None = None,
    model_config: str | None = None,
    device: str | None = None,
    **engine_options,
) -> RetrievalEngine:
    """Open a store and the encoder it was built with (recorded at index time), as a :class:`RetrievalEngine`.

    ``model``/``pretrained`` override the recorded encoder; with neither recorded nor given, the default
    is ViT-B-32 / laion2b_s34b_b79k.
    """
    from .encoders.open_clip import OpenClipEncoder

    store = open_store(db, host=host, port=port, name=name)
    spec = store.read_manifest().get("encoder") or {}
    if model is None and spec.get("kind") == "open_clip":
        model = spec["model_name"]
        pretrained = pretrained or spec.get("pretrained")
        model_config = model_config or spec.get("model_config")
    model = model or DEFAULT_MODEL
    if pretrained is None and model == DEFAULT_MODEL:
        pretrained = DEFAULT_PRETRAINED
    encoder = OpenClipEncoder(model, pretrained, model_config=model_config, device=device)
    return RetrievalEngine(store, encoder, **engine_options)
