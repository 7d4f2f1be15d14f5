"""Reproduce the paper's benchmark experiment (Yamashita et al. 2025) on MMQA / WebQA, and run
MixBench (GR-CLIP, Li et al. 2025) head to head with GR-CLIP's mean subtraction.

For each open_clip model: embed the questions (text) and the corpus (passages as text, images as
images, MixBench's multimodal documents as ``normalise(alpha * t + (1 - alpha) * v)``), cache the
vectors on disk, drop what the encoder cannot embed, and score every fusion method through the
same code as ``mmgap eval``. The report splits Recall@K by the gold modality: "text" is
same-modal, "image" is cross-modal; MixBench's adds "multimodal" and leads with nDCG@10.

Modules
-------
run
    :func:`reproduce`, the driver: checks the settings, runs each model, gathers the report.
model_run
    :class:`ModelRun`, one model's pass: embed, keep the usable questions, evaluate.
models
    :class:`ModelSpec` (``NAME:TAG``) parsing and building the encoder.
corpus
    :class:`Corpus`, the stacked vectors of every kind, and multimodal document mixing.
local_methods
    Methods scored here beside the registered ones (``grclip``).
cache
    :class:`EmbeddingCache`, the on-disk embeddings, reused item by item.
items
    Cache keys, encoder inputs and failure categories of benchmark items.
report
    :class:`ModelResult` and :class:`ReproduceReport`: tables, JSON, CSV.
report_kinds
    The three-kind (MixBench) tables: nDCG@10 by gold kind, the head-to-head.
"""

from __future__ import annotations

from ..datasets.base import limit_dataset
from ..mining import context_candidates
from .cache import CACHE_DIRNAME, EmbeddingCache, default_cache_dir
from .corpus import DEFAULT_ALPHA, Corpus, fuse_documents
from .items import reason_category
from .local_methods import LOCAL_METHODS, evaluate_local_methods, parse_run_methods
from .model_run import ModelRun, RunOptions
from .models import ModelSpec, parse_model_specs
from .report import CAPTION_METHOD, ModelResult, ReproduceReport
from .run import reproduce

__all__ = [
    "CACHE_DIRNAME",
    "CAPTION_METHOD",
    "DEFAULT_ALPHA",
    "LOCAL_METHODS",
    "Corpus",
    "EmbeddingCache",
    "ModelResult",
    "ModelRun",
    "ModelSpec",
    "ReproduceReport",
    "RunOptions",
    "context_candidates",
    "default_cache_dir",
    "evaluate_local_methods",
    "fuse_documents",
    "limit_dataset",
    "parse_model_specs",
    "parse_run_methods",
    "reason_category",
    "reproduce",
]
