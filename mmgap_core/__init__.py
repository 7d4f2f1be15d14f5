"""mmgap: mixed text+image retrieval that ranks correctly.

CLIP-style cosine scores are not comparable across modalities (the modality gap). mmgap standardizes each
candidate's score by the mean/std of pseudo-positive scores of its modality (Yamashita et al., 2025), so one
merged top-k ranks texts and images fairly. This package's top level imports numpy only; backends
(``mmgap_core.encoders.open_clip``, ``mmgap_core.store.chroma``) load their libraries when used.
"""

from .evaluation import EvalReport, evaluate_embeddings
from .fusion import (
    METHOD_NAMES,
    CandidateBatch,
    CenterFusion,
    FusedRanking,
    FusionMethod,
    ModalityCandidates,
    make_method,
)
from .metrics import Qrels, evaluate_ranking
from .mining import ModalityTopK, PseudoPositives, gold_pair_scores, mine_pseudo_positives, topk_per_modality
from .stats import ModalityStandardizer, NotFittedError

__version__ = "0.1.0"

__all__ = [
    "METHOD_NAMES",
    "CandidateBatch",
    "CenterFusion",
    "EvalReport",
    "FusedRanking",
    "FusionMethod",
    "ModalityCandidates",
    "ModalityStandardizer",
    "ModalityTopK",
    "NotFittedError",
    "PseudoPositives",
    "Qrels",
    "evaluate_embeddings",
    "evaluate_ranking",
    "gold_pair_scores",
    "make_method",
    "mine_pseudo_positives",
    "topk_per_modality",
]


def __getattr__(name: str):
    # The engine pulls no heavy library at import, but keep the top level minimal and lazy anyway.
    if name in {"RetrievalEngine", "open_engine", "Hit", "SearchResult", "IndexReport", "NotCalibratedError"}:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'mmgap_core' has no attribute {name!r}")
