"""Ranking metrics with a breakdown by the modality of each query's relevant item.

All metrics take a ranking ``ids [Q, K]`` (corpus rows, -1 = empty slot) and :class:`Qrels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIXED = "mixed"  # subset label for a query whose relevant items span several modalities


@dataclass
class Qrels:
    """Relevance judgements of a set of queries against a corpus.

    Parameters
    ----------
    rows : array-like
        ``[n, 3]`` integer rows of (query row, corpus row, relevance). Rows with relevance 0 or
        less (judged non-relevant) are dropped.
    n_queries : int
        Number of queries; every query row must be in ``[0, n_queries)``.

    Raises
    ------
    ValueError
        When a query row is out of range.
    """

    rows: np.ndarray
    n_queries: int

    def __post_init__(self):
        r = np.asarray(self.rows, dtype=np.int64).reshape(-1, 3)
        if r.size and (r[:, 2] <= 0).any():
            r = r[r[:, 2] > 0]  # relevance 0 means judged non-relevant
        if r.size and (r[:, 0].min() < 0 or r[:, 0].max() >= self.n_queries):
            raise ValueError(f"qrels: query row out of range [0, {self.n_queries - 1}]")
        self.rows = r

    def relevance_matrix(self, ranking: np.ndarray) -> np.ndarray:
        """Relevance of each ranked item.

        Parameters
        ----------
        ranking : numpy.ndarray
            ``[Q, K]`` int corpus rows, best first; -1 marks an empty slot.

        Returns
        -------
        numpy.ndarray
            ``[Q, K]`` int64 relevance, 0 where the item is not relevant or the slot is empty.
        """
        if self.rows.shape[0] == 0:
            return np.zeros(ranking.shape, dtype=np.int64)
        # Encode (query, doc) as one int so a sorted search finds each ranked pair's judgement.
        base = int(max(ranking.max(initial=0), self.rows[:, 1].max())) + 2
        judged_keys = self.rows[:, 0] * base + self.rows[:, 1]
        order = np.argsort(judged_keys)
        judged_keys, judged_rel = judged_keys[order], self.rows[order, 2]
        keys = (np.arange(ranking.shape[0])[:, None] * base + ranking).ravel()
        pos = np.minimum(np.searchsorted(judged_keys, keys), judged_keys.size - 1)
        found = (judged_keys[pos] == keys) & (ranking.ravel() >= 0)
        return np.where(found, judged_rel[pos], 0).reshape(ranking.shape)

    def n_relevant(self) -> np.ndarray:
        """Number of relevant items of each query, ``[Q]`` int64."""
        return np.bincount(self.rows[:, 0], minlength=self.n_queries)

    def ideal_gains(self, k: int) -> np.ndarray:
        """Each query's ``k`` highest relevances, descending (the gains of nDCG's ideal DCG).

        Parameters
        ----------
        k : int
            Ranks wanted.

        Returns
        -------
        numpy.ndarray
            ``[Q, k]`` float64, zero-padded.
        """
        out = np.zeros((self.n_queries, k))
        for q in np.unique(self.rows[:, 0]):
            rels = np.sort(self.rows[self.rows[:, 0] == q, 2])[::-1][:k]
            out[q, : rels.size] = rels
        return out

    def target_modality(self, corpus_modalities: Sequence[str]) -> np.ndarray:
        """The modality of each query's relevant items.

        Parameters
        ----------
        corpus_modalities : sequence of str
            The modality label of every corpus row.

        Returns
        -------
        numpy.ndarray
            ``[Q]`` object array: the modality, :data:`MIXED` when the relevant items span several,
            ``""`` for a query with none.
        """
        labels = np.asarray(corpus_modalities, dtype=object)
        out = np.full(self.n_queries, "", dtype=object)
        for q in np.unique(self.rows[:, 0]):
            mods = set(labels[self.rows[self.rows[:, 0] == q, 1]].tolist())
            out[q] = mods.pop() if len(mods) == 1 else MIXED
        return out


def recall_at_k(rel: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: the share of its relevant items in the top ``k``.

    Parameters
    ----------
    rel : numpy.ndarray
        ``[Q, K]`` relevance of each ranked item (:meth:`Qrels.relevance_matrix`).
    n_relevant : numpy.ndarray
        ``[Q]`` relevant items per query (:meth:`Qrels.n_relevant`).
    k : int
        Cut-off.

    Returns
    -------
    numpy.ndarray
        ``[Q]`` float64; NaN for a query with no relevant item.
    """
    hits = (rel[:, :k] > 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, hits / np.maximum(n_relevant, 1), np.nan)


def mrr_at_k(rel: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per query: the reciprocal rank of the first relevant item within the top ``k``.

    Parameters
    ----------
    rel : numpy.ndarray
        ``[Q, K]`` relevance of each ranked item.
    n_relevant : numpy.ndarray
        ``[Q]`` relevant items per query.
    k : int
        Cut-off.

    Returns
    -------
    numpy.ndarray
        ``[Q]`` float64: ``1 / rank``, 0 when no relevant item is in the top ``k``, NaN for a
        query with no relevant item.
    """
    hit = rel[:, :k] > 0
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)
    rr = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return np.where(n_relevant > 0, rr, np.nan)


def ndcg_at_k(rel: np.ndarray, ideal: np.ndarray, k: int) -> np.ndarray:
    """Per query nDCG@k with linear gains (as trec_eval) and log2 discounts.

    Parameters
    ----------
    rel : numpy.ndarray
        ``[Q, K]`` relevance of each ranked item.
    ideal : numpy.ndarray
        ``[Q, >= k]`` ideal gains (:meth:`Qrels.ideal_gains`).
    k : int
        Cut-off.

    Returns
    -------
    numpy.ndarray
        ``[Q]`` float64; NaN for a query with no relevant item.
    """
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (rel[:, :k] * disc[: rel[:, :k].shape[1]]).sum(axis=1)
    idcg = (ideal[:, :k] * disc[: ideal[:, :k].shape[1]]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan)


def modality_share_at_k(ranked_modalities: np.ndarray, modality: str, k: int) -> np.ndarray:
    """Per query: the share of the filled top-``k`` slots held by ``modality``.

    Parameters
    ----------
    ranked_modalities : numpy.ndarray
        ``[Q, K]`` modality label of each ranked item, ``""`` for an empty slot.
    modality : str
        The modality counted.
    k : int
        Cut-off.

    Returns
    -------
    numpy.ndarray
        ``[Q]`` float64 in ``[0, 1]`` (0 for a query with no filled slot).
    """
    top = ranked_modalities[:, :k]
    filled = np.maximum((top != "").sum(axis=1), 1)
    return (top == modality).sum(axis=1) / filled


def evaluate_ranking(
    ranking: np.ndarray,
    ranked_modalities: np.ndarray,
    qrels: Qrels,
    corpus_modalities: Sequence[str],
    ks: Sequence[int] = (1, 5, 10, 20),
) -> list[dict]:
    """Mean metrics over all queries and over the queries of each target modality.

    Metrics: ``recall@K``, ``mrr@K``, ``ndcg@K`` and ``share_<modality>@K`` for every K.
    Queries without any relevant item are left out of every subset.

    Parameters
    ----------
    ranking : numpy.ndarray
        ``[Q, K]`` corpus rows, best first; -1 marks an empty slot. Shorter than ``max(ks)`` is
        padded.
    ranked_modalities : numpy.ndarray
        ``[Q, K]`` modality label of each ranked item, ``""`` for an empty slot.
    qrels : Qrels
        The judgements of the ``Q`` queries.
    corpus_modalities : sequence of str
        The modality label of every corpus row.
    ks : sequence of int, default (1, 5, 10, 20)
        Cut-offs.

    Returns
    -------
    list of dict
        Rows ``{"subset", "metric", "value", "n"}``: subset ``"all"`` and each target modality
        (see :meth:`Qrels.target_modality`), ``n`` queries each.

    Raises
    ------
    ValueError
        When ``ranking`` is not ``[Q, K]`` for the ``Q`` queries of ``qrels``.
    """
    ranking = np.asarray(ranking, dtype=np.int64)
    if ranking.ndim != 2 or ranking.shape[0] != qrels.n_queries:
        raise ValueError(f"ranking: expected [{qrels.n_queries}, K], got {ranking.shape}")
    max_k = max(ks)
    ranked_modalities = np.asarray(ranked_modalities, dtype=object)
    if ranking.shape[1] < max_k:  # pad so that @K is well defined even for short rankings
        extra = ((0, 0), (0, max_k - ranking.shape[1]))
        ranking = np.pad(ranking, extra, constant_values=-1)
        ranked_modalities = np.pad(ranked_modalities, extra, constant_values="")
    rel = qrels.relevance_matrix(ranking)
    n_rel = qrels.n_relevant()
    ideal = qrels.ideal_gains(max_k)
    targets = qrels.target_modality(corpus_modalities)
    corpus_mods = sorted(set(np.asarray(corpus_modalities, dtype=object).tolist()))
    judged = n_rel > 0
    subsets = {"all": judged}
    for t in sorted(set(targets[judged].tolist())):
        subsets[t] = judged & (targets == t)
    per_query = {}
    for k in ks:
        per_query[f"recall@{k}"] = recall_at_k(rel, n_rel, k)
        per_query[f"mrr@{k}"] = mrr_at_k(rel, n_rel, k)
        per_query[f"ndcg@{k}"] = ndcg_at_k(rel, ideal, k)
        for m in corpus_mods:
            per_query[f"share_{m}@{k}"] = modality_share_at_k(ranked_modalities, m, k)
    rows = []
    for subset, mask in subsets.items():
        n = int(mask.sum())
        for metric, values in per_query.items():
            rows.append(
                {
                    "subset": subset,
                    "metric": metric,
                    "value": float(np.mean(values[mask])) if n else float("nan"),
                    "n": n,
                }
            )
    return rows
