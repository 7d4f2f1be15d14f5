"""All-but-the-top post-processing of embeddings, and the cosines it gives (numpy only).

Each embedding has its modality's mean subtracted and its modality's top ``D`` principal
directions projected out, then is renormalised (Mu & Viswanath 2018, ``D = max(1, round(d /
100))``, 5 for 512-d CLIP). The cosines of post-processed queries and candidates are the second
view of ``two-view-z`` (:mod:`mmgap_core.centered_background`); ``center`` and ``grclip`` use the
centring alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = [
    "PostProcessing",
    "batch_centered_cosines",
    "centered_cosines",
    "default_n_directions",
    "post_processings",
    "row_centered_cosines",
    "top_directions",
]


def top_directions(embeddings, mean, n_directions: int) -> np.ndarray:
    """The top principal directions of embeddings around ``mean``: ``[D, d]`` orthonormal rows.

    Parameters
    ----------
    embeddings : array-like
        ``[N, d]`` embeddings of one modality (a sample is enough).
    mean : array-like
        ``[d]`` the modality's mean embedding.
    n_directions : int
        ``D``; at most ``min(N - 1, d)`` are returned.

    Returns
    -------
    numpy.ndarray
        ``[D', d]`` float64, largest variance first (``D' <= D``; empty when ``N < 2``).
    """
    x = np.asarray(embeddings, dtype=np.float64) - np.asarray(mean, dtype=np.float64)
    n = min(int(n_directions), x.shape[0] - 1, x.shape[1])
    if n <= 0:
        return np.zeros((0, x.shape[1]))
    _values, vecs = np.linalg.eigh(x.T @ x)  # d x d scatter: memory d^2, whatever N is
    return vecs[:, ::-1][:, :n].T.copy()


def default_n_directions(dim: int) -> int:
    """``max(1, round(dim / 100))``: the rule of Mu & Viswanath (2018), 5 for 512-d CLIP."""
    return max(1, round(int(dim) / 100))


def centered_cosines(queries, query_mean, candidates, candidate_mean, *, directions=None):
    """Cosine of each query with each of its candidates in the post-processed space.

    Each side has its modality's mean subtracted and, with ``directions``, its modality's top
    principal directions projected out (all-but-the-top, Mu & Viswanath 2018), then is
    renormalised.

    Parameters
    ----------
    queries : array-like
        ``[Q, d]`` query embeddings.
    query_mean, candidate_mean : array-like
        ``[d]`` mean embedding of the query's modality and of the candidates' modality.
    candidates : array-like
        ``[Q, k, d]`` each query's candidate embeddings.
    directions : tuple of (array-like, array-like), optional
        ``([Dq, d], [Dc, d])`` orthonormal directions removed from the query and the candidate
        side (:func:`top_directions`); ``None``: centring only.

    Returns
    -------
    numpy.ndarray
        ``[Q, k]`` float64.
    """
    dq, dc = directions if directions is not None else (None, None)
    u = PostProcessing(query_mean, dq).unit_queries(queries)
    return PostProcessing(candidate_mean, dc).cosines(u, candidates)


class PostProcessing:
    """One modality's post-processing: its mean and top directions, and what follows from them.

    Built once per calibration by the methods that search with it: a search's single query pays
    for every numpy call, so the constants (``U mu``, ``|mu|^2``, the stacked mean and directions
    in the candidates' dtype) are computed here, not per query.

    Parameters
    ----------
    mean : array-like
        ``[d]`` the modality's mean embedding.
    directions : array-like, optional
        ``[D, d]`` orthonormal directions to project out (:func:`top_directions`); ``None`` or
        empty: centring only.
    """

    def __init__(self, mean, directions=None):
        self.mean = np.asarray(mean, dtype=np.float64)
        if self.mean.ndim != 1:
            raise ValueError(f"mean embedding: expected a vector [d], got shape {self.mean.shape}")
        d = self.mean.size
        dirs = np.zeros((0, d)) if directions is None else np.asarray(directions, np.float64)
        if dirs.size == 0:
            dirs = np.zeros((0, d))
        elif dirs.ndim != 2 or dirs.shape[1] != d:
            raise ValueError(f"directions: expected [D, {d}] to match the mean, got {dirs.shape}")
        self.directions = dirs
        self.dir_mean = self.directions @ self.mean  # U mu
        self.mean_sq = float(self.mean @ self.mean)
        stacked = np.concatenate([self.mean[None, :], self.directions])  # [1 + D, d]
        self._stacked = {np.dtype(np.float64): stacked, np.dtype(np.float32): stacked.astype("f4")}

    @property
    def dim(self) -> int:
        """The embedding width ``d``."""
        return self.mean.shape[-1]

    def unit_queries(self, queries) -> np.ndarray:
        """``[Q, d]`` queries with the mean and directions removed, renormalised (float64)."""
        q = np.asarray(queries, dtype=np.float64) - self.mean
        if len(self.directions):
            q = q - (q @ self.directions.T) @ self.directions
        return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)

    def cosines(self, u: np.ndarray, candidates) -> np.ndarray:
        """``[Q, k]`` post-processed cosines of candidates ``[Q, k, d]`` with unit queries ``u``.

        With ``P = I - U^T U`` (``U`` the removed directions) and ``v = P u``:
        ``u . P(c - mu) = v . c - v . mu`` and
        ``|P(c - mu)|^2 = |c|^2 - 2 c . mu + |mu|^2 - |U c - U mu|^2``. One matrix product over
        the candidates in their own dtype (float32 from a store) gives every term; no copy of
        them.
        """
        e = np.asarray(candidates)
        if e.dtype not in self._stacked:
            e = e.astype(np.float64)
        dirs = self.directions
        v = u - (u @ dirs.T) @ dirs if len(dirs) else u
        basis = np.empty((u.shape[0], 2 + len(dirs), u.shape[1]), dtype=e.dtype)
        basis[:, 0] = v
        basis[:, 1:] = self._stacked[e.dtype]
        # [Q, k, 2 + D]: each candidate dotted with v, mu and each row of U
        dots = np.matmul(e, basis.transpose(0, 2, 1))
        sq = np.einsum("qkd,qkd->qk", e, e) - 2.0 * dots[:, :, 1] + self.mean_sq
        if len(dirs):
            off = dots[:, :, 2:] - self.dir_mean
            sq = sq - np.einsum("qkj,qkj->qk", off, off)
        norm = np.sqrt(np.maximum(sq, 0.0))
        return (dots[:, :, 0] - (v @ self.mean)[:, None]) / np.maximum(norm, 1e-12)


def post_processings(
    means: Mapping[str, np.ndarray], directions: Mapping[str, np.ndarray] | None = None
) -> dict[str, PostProcessing]:
    """Modality -> :class:`PostProcessing` of its mean and (where given) its directions."""
    dirs = directions or {}
    return {m: PostProcessing(mu, dirs.get(m)) for m, mu in means.items()}


def batch_centered_cosines(
    batch,
    means: Mapping[str, np.ndarray],
    name: str,
    directions=None,
    query_mean=None,
    *,
    processing: Mapping[str, PostProcessing] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`centered_cosines` of a candidate batch, per modality, ``-inf`` where padding.

    Parameters
    ----------
    batch : CandidateBatch
        With ``query_embeddings`` and a ``candidate_embeddings`` lookup.
    means : mapping of str to numpy.ndarray
        Modality -> ``[d]`` mean embedding.
    name : str
        The calling method's name, for messages.
    directions : mapping of str to numpy.ndarray, optional
        Modality -> ``[D, d]`` directions to project out (a modality without: centring only).
    query_mean : numpy.ndarray, optional
        ``[d]`` mean subtracted from the queries instead of their modality's (GR-CLIP's own).
    processing : mapping of str to PostProcessing, optional
        :func:`post_processings` of ``means`` and ``directions``, built once by the caller.
    """
    if batch.query_embeddings is None or batch.candidate_embeddings is None:
        raise ValueError(f"{name} needs query embeddings and a candidate embedding lookup")
    q = np.asarray(batch.query_embeddings, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != batch.n_queries:
        raise ValueError(
            f"{name}: query embeddings have shape {q.shape}, expected [{batch.n_queries}, dim]"
        )
    post = processing if processing is not None else post_processings(means, directions)

    def post_of(m: str) -> PostProcessing:
        if m not in post:
            raise ValueError(f"{name}: no mean embedding for modality {m!r}; have {sorted(post)}")
        if post[m].mean.shape != (q.shape[1],):
            raise ValueError(
                f"{name}: mean of {m!r} has shape {post[m].mean.shape}, queries have dimension "
                f"{q.shape[1]}"
            )
        return post[m]

    qm = batch.query_modality
    if query_mean is None:
        query_post = post_of(qm)
    else:
        query_post = PostProcessing(query_mean, (directions or {}).get(qm))
        if query_post.mean.shape != (q.shape[1],):
            raise ValueError(
                f"{name}: query embeddings have shape {q.shape}, expected "
                f"[{batch.n_queries}, {query_post.mean.size}]"
            )
    u = query_post.unit_queries(q)
    out = {}
    for m, c in batch.lists.items():
        cos = post_of(m).cosines(u, batch.candidate_embeddings(m, c.ids))
        out[m] = cos if c.is_full else np.where(c.valid, cos, -np.inf)
    return out


def row_centered_cosines(
    query: np.ndarray,
    query_modality: str,
    embeddings: Mapping[str, np.ndarray],
    processing: Mapping[str, PostProcessing],
) -> dict[str, list[float]] | None:
    """:func:`batch_centered_cosines` of one query, as Python floats, bit for bit (or ``None``).

    ``embeddings`` maps each modality to its ``[k, d]`` candidates; ``processing`` is
    :func:`post_processings` of the means and directions. ``None`` where the batch function
    would raise (a missing mean, a width that does not match) or a cosine is not finite: the
    caller then takes the batch path, which says what is wrong.
    """
    d = query.shape[-1]
    mods = [query_modality, *embeddings]
    if query.ndim != 1 or any(m not in processing or processing[m].dim != d for m in mods):
        return None
    u = processing[query_modality].unit_queries(query[None, :])
    out = {}
    for m, e in embeddings.items():
        if e.ndim != 2 or e.shape[1] != d:
            return None
        row = processing[m].cosines(u, e[None])[0].tolist()
        if not all(map(math.isfinite, row)):
            return None
        out[m] = row
    return out
