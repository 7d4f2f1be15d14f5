"""mmgap: mixed text+image retrieval that ranks correctly.

CLIP-style cosine scores are not comparable across modalities (the modality gap). mmgap standardizes
each candidate's score by the mean/std of pseudo-positive scores of its modality (Yamashita et al.,
2025), so one merged top-k ranks texts and images fairly.

The top level lists what a user builds with, and loads each name on first access: ``import
mmgap_core`` needs numpy only, and the backends (Chroma, open_clip) load their libraries when used.

* Engine: :class:`RetrievalEngine`, :func:`open_engine`, :class:`ChromaStore`,
  :class:`OpenClipEncoder`, and what a search or an ``index`` run returns (:class:`Hit`,
  :class:`SearchResult`, :class:`IndexReport`, :class:`SkippedItem`).
* Core math: :class:`ModalityStandardizer`, :func:`topk_per_modality`,
  :func:`mine_pseudo_positives`, :func:`evaluate_embeddings` (:class:`EvalReport`), and the fusion
  methods by name (:data:`METHOD_NAMES`, :func:`make_method`).
* Errors: :class:`NotCalibratedError`, :class:`CalibrationFormatError`, :class:`NotFittedError`,
  :class:`WeightsUnavailableError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_module

if TYPE_CHECKING:  # pragma: no cover
    from .calibration.record import CalibrationFormatError, NotCalibratedError
    from .encoders import OpenClipEncoder, WeightsUnavailableError
    from .engine import RetrievalEngine
    from .evaluation import EvalReport, evaluate_embeddings
    from .factory import open_engine
    from .fusion import METHOD_NAMES, make_method
    from .mining import mine_pseudo_positives, topk_per_modality
    from .results import Hit, IndexReport, SearchResult, SkippedItem
    from .stats import ModalityStandardizer, NotFittedError
    from .store import ChromaStore

__version__ = "0.1.0"

_NAMES = {
    # engine and backends
    "RetrievalEngine": ".engine",
    "open_engine": ".factory",
    "ChromaStore": ".store",
    "OpenClipEncoder": ".encoders",
    # results
    "Hit": ".results",
    "IndexReport": ".results",
    "SearchResult": ".results",
    "SkippedItem": ".results",
    # core math
    "ModalityStandardizer": ".stats",
    "topk_per_modality": ".mining",
    "mine_pseudo_positives": ".mining",
    "evaluate_embeddings": ".evaluation",
    "EvalReport": ".evaluation",
    "METHOD_NAMES": ".fusion",
    "make_method": ".fusion",
    # errors
    "NotCalibratedError": ".calibration.record",
    "CalibrationFormatError": ".calibration.record",
    "NotFittedError": ".stats",
    "WeightsUnavailableError": ".encoders",
}

_EXTRA_OF = {"chromadb": "chroma", "torch": "clip", "open_clip": "clip", "PIL": "clip"}


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    extra = _EXTRA_OF.get((exc.name or "").split(".")[0])
    if extra is None:
        return None
    return f'{exc.name} is not installed: install it with pip install "mmgap[{extra}]"'


__all__ = [
    "CalibrationFormatError",
    "ChromaStore",
    "EvalReport",
    "Hit",
    "IndexReport",
    "METHOD_NAMES",
    "ModalityStandardizer",
    "NotCalibratedError",
    "NotFittedError",
    "OpenClipEncoder",
    "RetrievalEngine",
    "SearchResult",
    "SkippedItem",
    "WeightsUnavailableError",
    "evaluate_embeddings",
    "make_method",
    "mine_pseudo_positives",
    "open_engine",
    "topk_per_modality",
]

__getattr__, __dir__ = lazy_module(
    __name__, _NAMES, eager=["__version__"], missing_hint=_missing_extra
)
