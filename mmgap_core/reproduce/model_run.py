"""One model's pass of ``mmgap reproduce``: :class:`ModelRun`.

A run embeds the questions (text) and the corpus (passages as text, images as images, MixBench's
multimodal documents as ``normalise(alpha * t + (1 - alpha) * v)``) through the embedding cache,
drops what the encoder cannot embed, and scores every fusion method through the same code as
``mmgap eval``: :func:`~mmgap_core.evaluation.evaluate_embeddings` for the global pool,
:func:`~mmgap_core.evaluation.evaluate_candidates` for each question's own context pool; methods
the shared evaluation does not know yet (``grclip``) go through :mod:`.local_methods` on the same
candidates. Queries are text; calibration is transductive (each question's top-1 per modality,
without labels). With a captioner, a second pass retrieves images as their caption text by raw
cosine.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..captioning import Captioner, caption_corpus
from ..datasets.base import MODALITIES, BenchmarkDataset, BenchmarkQuery
from ..evaluation import DEFAULT_POOL, EvalReport, evaluate_candidates, evaluate_embeddings
from ..mining import context_candidates, topk_per_modality
from .cache import Embedded, EmbeddingCache
from .corpus import DEFAULT_ALPHA, Corpus, fuse_documents, rows_of
from .items import image_inputs, image_key, reason_category, text_inputs, text_key
from .local_methods import evaluate_local_methods, split_methods
from .report import CAPTION_METHOD, QUERY_MODALITY, ModelResult

__all__ = ["ModelRun", "RunOptions", "captioner_name"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """Settings shared by every model of one :func:`reproduce` call.

    Attributes
    ----------
    pool : {"context", "global"}
        Each question's own candidates, or the whole corpus.
    methods : list of str
        Fusion methods to score.
    ks : tuple of int
        Recall@K cut-offs, ascending.
    candidates : int
        Global pool only: candidates retrieved per modality per question before fusion.
    captioner : Captioner or None
        Adds the caption-baseline row when given.
    progress : bool
        Show progress bars on stderr.
    log : callable
        Called with one-line status messages.
    alpha : float
        The text's weight in a multimodal document's vector.
    """

    pool: str
    methods: list[str]
    ks: tuple[int, ...]
    candidates: int = DEFAULT_POOL
    captioner: Captioner | None = None
    progress: bool = True
    log: Callable[[str], None] = logger.info
    alpha: float = DEFAULT_ALPHA


def _part(kind: str, rows: list[tuple[str, int]], emb: Embedded) -> tuple:
    """One corpus part: ``(kind, item ids, their vectors)`` from ``(id, row in emb)`` pairs."""
    return kind, [i for i, _ in rows], emb.vectors[[r for _, r in rows]]


@dataclass
class ModelRun:
    """One model's pass over the dataset: embed, keep the usable questions, evaluate.

    Call :meth:`run` once. The embedding steps fill the attributes below, which the caption
    baseline reuses.

    Attributes
    ----------
    dataset : BenchmarkDataset
        The (already limited) benchmark.
    encoder : Encoder
        Anything with ``model_id``, ``embed_texts`` and ``embed_images``.
    label : str
        The model's name in messages.
    cache : EmbeddingCache
        Where vectors are looked up and stored.
    options : RunOptions
        The settings shared by all models.
    skipped : collections.Counter
        Items that could not be embedded or captioned, per reason.
    dropped : collections.Counter
        Questions left out, per reason.
    n_embedded, n_from_cache : int
        Items embedded by the encoder, and items read from the cache, so far.
    kept : list of BenchmarkQuery
        The questions evaluated.
    queries : numpy.ndarray
        Their vectors, one row per kept question.
    passages : Embedded
        The passages' vectors; ``text_rows`` / ``image_rows`` list ``(item id, row)`` of the
        passages and images that embedded.
    documents : tuple or None
        Three kinds only: ``(ids, vectors)`` of the multimodal documents that embedded.
    """

    dataset: BenchmarkDataset
    encoder: Any
    label: str
    cache: EmbeddingCache
    options: RunOptions
    skipped: collections.Counter = field(default_factory=collections.Counter)
    dropped: collections.Counter = field(default_factory=collections.Counter)
    n_embedded: int = 0
    n_from_cache: int = 0
    kept: list[BenchmarkQuery] = field(default_factory=list)
    queries: np.ndarray | None = None
    passages: Embedded | None = None
    text_rows: list[tuple[str, int]] = field(default_factory=list)
    image_rows: list[tuple[str, int]] = field(default_factory=list)
    documents: tuple[list[str], np.ndarray] | None = None

    def embed(
        self, what: str, kind: str, keys: list[str], make_inputs, desc: str, *, skipped=None
    ) -> Embedded:
        """Embed ``keys`` through the cache and count what it embedded and what failed.

        Parameters
        ----------
        what : str
            The items' name in failure counts ("question", "passage", "document image", ...).
        kind : {"text", "image"}
            How the encoder embeds them.
        keys : list of str
            Item keys (see :mod:`.items`).
        make_inputs : callable
            Makes the encoder inputs of keys (see :meth:`EmbeddingCache.embed`).
        desc : str
            The progress bar's label.
        skipped : collections.Counter, optional
            Where failures are counted; default :attr:`skipped`.

        Returns
        -------
        Embedded
        """
        counter = self.skipped if skipped is None else skipped
        emb = self.cache.embed(
            self.encoder,
            kind,
            keys,
            make_inputs,
            progress=self.options.progress,
            desc=f"{desc} [{self.label}]",
        )
        for k in keys:
            if k in emb.failures:
                counter[f"{what}: {reason_category(emb.failures[k])}"] += 1
        self.n_embedded += emb.n_new
        self.n_from_cache += emb.n_cached
        return emb

    def run(self) -> ModelResult:
        """Embed, evaluate and (with a captioner) add the caption baseline.

        Returns
        -------
        ModelResult

        Raises
        ------
        ValueError
            No question of one modality is left after dropping what the encoder could not
            embed, or the encoder disagrees with the cache about the vector dimension.
        RuntimeError
            The run was already used.
        """
        if self.kept:
            raise RuntimeError("ModelRun.run() was already called; make a new ModelRun")
        t0 = time.perf_counter()
        data = self.dataset
        questions = [q.text for q in data.queries]
        q_keys = [text_key(t) for t in questions]
        q_inputs = text_inputs(dict(zip(q_keys, questions)))
        q_emb = self.embed("question", "text", q_keys, q_inputs, "questions")
        text_ids, image_ids = list(data.texts), list(data.images)
        t_keys = [text_key(data.texts[i]) for i in text_ids]
        t_inputs = text_inputs(dict(zip(t_keys, data.texts.values())))
        self.passages = self.embed("passage", "text", t_keys, t_inputs, "passages")
        i_keys = [image_key(data.images[i]) for i in image_ids]
        i_inputs = image_inputs(dict(zip(i_keys, data.images.values())))
        i_emb = self.embed("image", "image", i_keys, i_inputs, "images")
        self.text_rows = rows_of(text_ids, t_keys, self.passages)
        self.image_rows = rows_of(image_ids, i_keys, i_emb)
        if "multimodal" in data.kinds:
            self.documents = self.embed_documents()
        dim = max(self.passages.vectors.shape[1], i_emb.vectors.shape[1], q_emb.vectors.shape[1])
        parts = [
            _part("text", self.text_rows, self.passages),
            _part("image", self.image_rows, i_emb),
        ]
        if self.documents is not None:
            parts.append(("multimodal", *self.documents))
        corpus = Corpus.stack(parts, dim)
        counts = self._keep_questions(q_keys, q_emb, corpus)
        self.options.log(
            f"{self.label}: evaluating {len(self.kept)} questions against "
            f"{corpus.vectors.shape[0]} corpus items"
        )
        report = self.evaluate(corpus, self.options.methods)
        caption_info = None
        if self.options.captioner is not None:
            caption_info = self.caption_baseline(report)
        return ModelResult(
            model_id=self.encoder.model_id,
            label=self.label,
            report=report,
            encoder_skipped=self.skipped,
            dropped_queries=self.dropped,
            query_counts=counts,
            corpus_counts=corpus.counts(),
            n_embedded=self.n_embedded,
            n_from_cache=self.n_from_cache,
            seconds=time.perf_counter() - t0,
            caption_baseline=caption_info,
        )

    def embed_documents(self) -> tuple[list[str], np.ndarray]:
        """Embed the multimodal documents' texts and images, then mix them (see :mod:`.corpus`).

        Returns
        -------
        tuple of (list of str, numpy.ndarray)
            The ids of the documents whose text and image both embedded, and their vectors.
        """
        docs = self.dataset.documents
        ids = list(docs)
        t_keys = [text_key(docs[i].text) for i in ids]
        i_keys = [image_key(docs[i].image) for i in ids]
        t_inputs = text_inputs({k: docs[i].text for i, k in zip(ids, t_keys)})
        i_inputs = image_inputs({k: docs[i].image for i, k in zip(ids, i_keys)})
        t_emb = self.embed("document text", "text", t_keys, t_inputs, "document texts")
        i_emb = self.embed("document image", "image", i_keys, i_inputs, "document images")
        return fuse_documents(ids, t_keys, i_keys, t_emb, i_emb, self.options.alpha, self.skipped)

    def _keep_questions(self, q_keys, q_emb: Embedded, corpus: Corpus) -> dict[str, int]:
        """Keep the questions that embedded and have an embedded gold item; count per modality."""
        vectors = []
        for q, key in zip(self.dataset.queries, q_keys):
            if key not in q_emb.row_of:
                self.dropped["question text could not be embedded"] += 1
            elif not corpus.gold_rows(q):
                self.dropped["all gold items dropped by the encoder"] += 1
            else:
                self.kept.append(q)
                vectors.append(q_emb.vectors[q_emb.row_of[key]])
        counts = dict.fromkeys(self.dataset.kinds, 0)
        for q in self.kept:
            counts[q.gold_modality] = counts.get(q.gold_modality, 0) + 1
        # The paper's experiment needs both modalities; a three-kind benchmark needs a question.
        required = MODALITIES if self.dataset.kinds == MODALITIES else ()
        missing = [m for m in required if counts[m] == 0]
        if not self.kept:
            missing = ["usable"]
        if missing:
            raise ValueError(
                f"{self.encoder.model_id}: no {' and no '.join(missing)} questions left after "
                f"dropping what the encoder could not embed (encoder skipped: "
                f"{dict(self.skipped) or 'nothing'}; questions dropped: "
                f"{dict(self.dropped) or 'none'})"
            )
        self.queries = np.stack(vectors).astype(np.float32)
        return counts

    def evaluate(self, corpus: Corpus, methods: list[str]) -> EvalReport:
        """Score ``methods`` for the kept questions against ``corpus``, in the run's pool.

        Registered methods go through the shared evaluation; local ones (:mod:`.local_methods`)
        are fused from the same candidates and their rows appended, in the order of ``methods``.
        """
        opts = self.options
        qrels = corpus.qrels(self.kept)
        registered, local = split_methods(methods)
        args = (self.queries, corpus.vectors, corpus.labels, qrels)
        pool = max(opts.candidates, max(opts.ks))
        retrieved = None
        if opts.pool == "context":
            pools = [corpus.pool_rows(q) for q in self.kept]
            retrieved = context_candidates(self.queries, corpus.vectors, corpus.labels, pools)
        elif local:
            retrieved = topk_per_modality(self.queries, corpus.vectors, corpus.labels, pool)
        common = {"query_modality": QUERY_MODALITY, "ks": opts.ks}
        if not registered:
            notes: list[str] = []
            stats = {"n_queries": len(self.kept), "query_modality": QUERY_MODALITY}
            stats.update(corpus_size=int(corpus.vectors.shape[0]), notes=notes)
            report = EvalReport([], stats, notes, opts.ks, QUERY_MODALITY)
        elif opts.pool == "global":
            report = evaluate_embeddings(*args, methods=registered, pool=pool, **common)
        else:
            report = evaluate_candidates(retrieved, *args, methods=registered, **common)
        if local:
            rows, notes = evaluate_local_methods(local, retrieved, *args, **common)
            order = {m: n for n, m in enumerate(methods)}
            report.results = sorted(report.results + rows, key=lambda r: order[r["method"]])
            report.notes.extend(notes)  # the same list as stats["notes"]
        return report

    def caption_baseline(self, report: EvalReport) -> dict:
        """Retrieve images as caption TEXT by raw cosine; append the rows to ``report``.

        Same questions and the same (embedded) corpus as the main run; images that cannot be
        captioned are left out, so a question whose gold images all lack a caption counts in no
        subset.

        Parameters
        ----------
        report : EvalReport
            The main run's report; gets the ``caption-baseline`` rows.

        Returns
        -------
        dict
            ``captioner``, ``captioned``, ``skipped`` (per reason), ``embedded``, ``from_cache``
            and, when no image could be captioned, a ``note``.
        """
        captioner = self.options.captioner
        skipped: collections.Counter = collections.Counter()
        images = {i: self.dataset.images[i] for i, _ in self.image_rows}
        captions = _caption_images(images, captioner, skipped)
        c_ids = [i for i, _ in self.image_rows if i in captions]
        c_keys = [text_key(captions[i]) for i in c_ids]
        c_emb = self.embed(  # failures count in the baseline's own record, not the model's
            "caption",
            "text",
            c_keys,
            text_inputs(dict(zip(c_keys, (captions[i] for i in c_ids)))),
            "captions",
            skipped=skipped,
        )
        info = {
            "captioner": captioner_name(captioner),
            "captioned": 0,
            "skipped": dict(skipped),
            "embedded": c_emb.n_new,
            "from_cache": c_emb.n_cached,
        }
        cap_rows = rows_of(c_ids, c_keys, c_emb)
        if not cap_rows:
            return {**info, "note": "no image could be captioned; no results"}
        # Caption rows keep the label "image" so results split by gold modality like the main run.
        dim = self.queries.shape[1]
        parts = [_part("text", self.text_rows, self.passages), _part("image", cap_rows, c_emb)]
        corpus = Corpus.stack(parts, dim)
        base = self.evaluate(corpus, ["raw"])
        for row in base.results:
            report.results.append({**row, "method": CAPTION_METHOD})
        return {**info, "captioned": len(cap_rows), "skipped": dict(sorted(skipped.items()))}


def captioner_name(captioner) -> str:
    """Return a captioner's ``name`` (its class name if it has none)."""
    return str(getattr(captioner, "name", type(captioner).__name__))


def _caption_images(images, captioner: Captioner, skipped: collections.Counter) -> dict[str, str]:
    """image id -> caption; images the captioner fails on are counted and left out."""
    captions: dict[str, str] = {}
    ids = list(images)
    for start in range(0, len(ids), 32):
        batch = {i: images[i] for i in ids[start : start + 32]}
        try:
            captions.update(caption_corpus(batch, captioner))
        except ValueError:  # find the culprit(s): caption the batch one image at a time
            for i, ref in batch.items():
                try:
                    captions.update(caption_corpus({i: ref}, captioner))
                except ValueError as exc:
                    skipped[f"caption: {reason_category(str(exc))}"] += 1
    return captions
