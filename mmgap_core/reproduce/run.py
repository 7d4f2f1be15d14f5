"""The driver of ``mmgap reproduce``: :func:`reproduce` runs each model and gathers the report."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..captioning import Captioner
from ..datasets.base import MODALITIES, POOLS, BenchmarkDataset, limit_dataset
from ..evaluation import DEFAULT_KS, DEFAULT_POOL
from .cache import EmbeddingCache
from .corpus import DEFAULT_ALPHA, check_alpha
from .local_methods import parse_run_methods
from .model_run import ModelRun, RunOptions, captioner_name
from .models import MODEL_LOAD_ERRORS, ModelSpec, as_model_list, build_encoder
from .report import ModelResult, ReproduceReport

__all__ = ["reproduce"]

logger = logging.getLogger(__name__)


def _options(dataset, pool, methods, ks, **rest) -> RunOptions:
    pool = pool or dataset.pool
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if pool == "context" and any(q.pool_ids is None for q in dataset.queries):
        raise ValueError(
            "pool 'context' needs a dataset loaded with pool='context' (per-question pools)"
        )
    three_kinds = dataset.kinds != MODALITIES
    if three_kinds and rest.get("captioner") is not None:
        raise ValueError(
            f"the caption baseline covers text + image corpora only, not {dataset.name}'s "
            f"{len(dataset.kinds)} kinds"
        )
    method_names = parse_run_methods(methods, add_local=three_kinds)
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks: expected positive cut-offs, got {ks}")
    return RunOptions(pool=pool, methods=method_names, ks=ks, **rest)


def reproduce(
    dataset: BenchmarkDataset,
    encoders_or_specs,
    *,
    pool: str | None = None,
    methods: Sequence[str] | str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    cache_dir: str | os.PathLike | None = None,
    captioner: Captioner | None = None,
    progress: bool = True,
    limit: int | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    candidates: int = DEFAULT_POOL,
    log: Callable[[str], None] | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> ReproduceReport:
    """Run the paper's experiment on ``dataset`` for each encoder or model spec.

    Parameters
    ----------
    dataset : BenchmarkDataset
        A loaded benchmark (:func:`~mmgap_core.datasets.load_dataset`).
    encoders_or_specs : encoder, ModelSpec, str, or a sequence of them
        Encoders (anything with ``model_id``, ``embed_texts``, ``embed_images``), or
        :class:`ModelSpec` / ``"NAME:TAG"`` strings, built as ``OpenClipEncoder`` one at a time;
        a model whose weights cannot be loaded is skipped with its reason.
    pool : {"context", "global"}, optional
        Default: the pool the dataset was loaded with. "context" needs per-question pools.
    methods : sequence of str or str, optional
        Fusion methods (names or a comma-separated string); None or "all": every registered
        method, plus ``grclip`` for a three-kind benchmark (MixBench's head-to-head).
    ks : sequence of int, default (1, 5, 10, 20)
        Recall@K cut-offs.
    cache_dir : str or os.PathLike, optional
        The embedding cache folder; None disables the cache.
    captioner : Captioner, optional
        Adds the "caption-baseline" row: images as caption text, raw text-to-text cosine.
    progress : bool, default True
        Show tqdm progress bars (on stderr).
    limit : int, optional
        Keep only the first ``limit`` questions of each gold modality.
    encoder_options : mapping, optional
        Keyword arguments for ``OpenClipEncoder`` built from specs (device, batch_size,
        cache_dir for weights, ...).
    candidates : int, default 100
        Global pool only: candidates retrieved per modality per question before fusion.
    log : callable, optional
        Called with one-line status messages; default: this module's logger at INFO.
    alpha : float, default 0.5
        The text's weight in a multimodal document's vector,
        ``normalise(alpha * t + (1 - alpha) * v)`` (three-kind benchmarks).

    Returns
    -------
    ReproduceReport
        The evaluated models, and the skipped ones with their reasons.

    Raises
    ------
    ValueError
        Bad arguments, or an encoder without a ``model_id``.
    """
    log = log or logger.info
    alpha = check_alpha(alpha)
    options = _options(
        dataset,
        pool,
        methods,
        ks,
        candidates=candidates,
        captioner=captioner,
        progress=progress,
        log=log,
        alpha=alpha,
    )
    if limit is not None:
        dataset = limit_dataset(dataset, limit)
    items = as_model_list(encoders_or_specs)
    if not items:
        raise ValueError("no encoder or model spec given")
    cache = EmbeddingCache(cache_dir, log=log)
    models: dict[str, ModelResult] = {}
    skipped_models: dict[str, str] = {}
    seen_specs: set[ModelSpec] = set()
    for item in items:
        spec = ModelSpec.parse(item) if isinstance(item, str) else item
        if isinstance(spec, ModelSpec):
            label = spec.label
            if spec in seen_specs:
                skipped_models[f"{label} (again)"] = "duplicate: the same model was given twice"
                continue
            seen_specs.add(spec)
            log(f"{label}: loading the model")
            try:
                encoder = build_encoder(spec, encoder_options or {})
            except MODEL_LOAD_ERRORS as exc:
                skipped_models[label] = f"{type(exc).__name__}: {exc}"
                log(f"{label}: skipped: {skipped_models[label]}")
                continue
        else:
            encoder = spec
            label = str(getattr(encoder, "model_id", "") or "")
            if not label:
                raise ValueError(f"encoder {encoder!r} has no model_id (needed to key the cache)")
        if encoder.model_id in models:
            skipped_models[label] = (
                f"duplicate: same model id {encoder.model_id} as an earlier model"
            )
            continue
        try:
            result = ModelRun(dataset, encoder, label, cache, options).run()
        except ValueError as exc:
            skipped_models[label] = str(exc)
            log(f"{label}: skipped: {exc}")
            continue
        finally:
            del encoder  # free the model before loading the next one (the run is gone too)
        models[result.model_id] = result
        log(
            f"{label}: done in {result.seconds:.1f} s ({result.n_embedded} items embedded, "
            f"{result.n_from_cache} from the cache)"
        )
    return ReproduceReport(
        dataset=_dataset_info(dataset, options.pool, limit, alpha),
        models=models,
        skipped_models=skipped_models,
        ks=options.ks,
        methods=options.methods,
        pool=options.pool,
        dataset_skipped=dict(sorted(dataset.skipped.items())),
        captioner=None if captioner is None else captioner_name(captioner),
    )


def _dataset_info(dataset: BenchmarkDataset, pool: str, limit: int | None, alpha: float) -> dict:
    info = {
        "name": dataset.name,
        "split": dataset.split,
        "pool": pool,
        "n_queries": len(dataset.queries),
        "modality_counts": dataset.modality_counts(),
        "corpus": dataset.corpus_counts(),
        "source_files": [str(p) for p in dataset.source_files],
        "limit_per_modality": limit,
        "summary": dataset.summary(),
    }
    if dataset.kinds != MODALITIES:
        info.update(kinds=list(dataset.kinds), alpha=alpha, **dict(dataset.meta))
    return info
