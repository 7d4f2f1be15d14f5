"""Fusion methods ``mmgap reproduce`` scores itself, beside the registered ones.

``grclip`` (:class:`~mmgap_core.fusion_grclip.GRClipFusion`, GR-CLIP's mean subtraction with a
separate query mean) is not in :data:`mmgap_core.fusion.METHOD_NAMES`, so the shared evaluation
cannot build it. :func:`evaluate_local_methods` fuses the same per-modality candidates the
registered methods get and scores them with the same metrics
(:func:`~mmgap_core.metrics.evaluate_ranking`). Once a method is registered, the shared
evaluation scores it and this module leaves it alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..candidates import CandidateBatch
from ..fusion import METHOD_NAMES, parse_methods
from ..fusion_grclip import GRCLIP_METHOD, GRClipFusion
from ..metrics import Qrels, evaluate_ranking
from ..mining import ModalityTopK

__all__ = [
    "LOCAL_METHODS",
    "evaluate_local_methods",
    "local_methods",
    "parse_run_methods",
]

logger = logging.getLogger(__name__)

LOCAL_METHODS = (GRCLIP_METHOD,)
_CHUNK = 256  # queries fused at a time, bounding the [chunk, pool, d] embeddings read

_NOTES = {
    GRCLIP_METHOD: "grclip: GR-CLIP's mean subtraction; query mean fitted on the evaluation "
    "queries, one mean per corpus kind (transductive, no labels)",
}


def local_methods() -> list[str]:
    """The local methods that the shared evaluation does not know (yet)."""
    return [m for m in LOCAL_METHODS if m not in METHOD_NAMES]


def parse_run_methods(spec: Sequence[str] | str | None, *, add_local: bool) -> list[str]:
    """Validate the methods of a run: registered names plus the local ones.

    Parameters
    ----------
    spec : sequence of str or str or None
        Names, or a comma-separated string; None, "" or "all": every registered method.
    add_local : bool
        With "all", add the local methods too (MixBench's head-to-head).

    Returns
    -------
    list of str
        The names, without duplicates, in the order given.

    Raises
    ------
    ValueError
        An unknown name (the message lists the known ones).
    """
    extra = local_methods()
    text = spec if spec is None or isinstance(spec, str) else ",".join(spec)
    if text is None or text.strip() in ("", "all"):
        return list(METHOD_NAMES) + (extra if add_local else [])
    names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    registered = [n for n in names if n not in extra]
    if not names:
        parse_methods(text)  # raises, naming the known methods
    if registered:
        try:
            parse_methods(",".join(registered))
        except ValueError as exc:
            raise ValueError(f"{exc}, {', '.join(extra)}" if extra else str(exc)) from None
    return names


def split_methods(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split method names into (registered, local)."""
    extra = set(local_methods())
    return [n for n in names if n not in extra], [n for n in names if n in extra]


def evaluate_local_methods(
    names: Sequence[str],
    retrieved: ModalityTopK,
    queries: np.ndarray,
    corpus: np.ndarray,
    labels: np.ndarray,
    qrels: Qrels,
    *,
    ks: Sequence[int],
    query_modality: str = "text",
) -> tuple[list[dict], list[str]]:
    """Fuse ``retrieved`` with each local method and score it against ``qrels``.

    Parameters
    ----------
    names : sequence of str
        Local method names (:data:`LOCAL_METHODS`).
    retrieved : ModalityTopK
        Each query's candidates per modality, as the registered methods got them.
    queries : numpy.ndarray
        ``[Q, d]`` query embeddings.
    corpus : numpy.ndarray
        ``[N, d]`` corpus embeddings (the candidates' rows).
    labels : numpy.ndarray
        ``[N]`` corpus kinds.
    qrels : Qrels
        Relevance of corpus rows per query.
    ks : sequence of int
        Metric cut-offs.
    query_modality : str, default "text"
        The queries' modality.

    Returns
    -------
    tuple of (list of dict, list of str)
        Result rows ``{"method", "subset", "metric", "value", "n"}`` (the shape of
        :class:`~mmgap_core.evaluation.EvalReport` rows) and notes on how each method was fitted.

    Raises
    ------
    ValueError
        A name that is not a local method.
    """
    ks = tuple(sorted({int(k) for k in ks}))
    rows, notes = [], []
    for name in names:
        if name not in LOCAL_METHODS:
            raise ValueError(f"{name!r} is not a local method; local methods: {LOCAL_METHODS}")
        fuser = GRClipFusion.fit(queries, corpus, labels, name=name)
        n_q, top = queries.shape[0], ks[-1]
        ranking = np.full((n_q, top), -1, dtype=np.int64)
        ranked = np.full((n_q, top), "", dtype=object)
        for s in range(0, n_q, _CHUNK):
            e = min(s + _CHUNK, n_q)
            batch = CandidateBatch.from_topk(
                retrieved, query_modality, rows=slice(s, e), query_embeddings=queries, corpus=corpus
            )
            fused = fuser.fuse(batch, top)
            ranking[s:e, : fused.ids.shape[1]] = fused.ids
            ranked[s:e, : fused.ids.shape[1]] = fused.modality_labels()
        rows += [
            {"method": name, **r} for r in evaluate_ranking(ranking, ranked, qrels, labels, ks)
        ]
        notes.append(_NOTES.get(name, name))
    return rows, notes
