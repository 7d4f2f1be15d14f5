"""Exact per-modality top-k search and pseudo-positive mining.

Blocked over queries and candidates, built on float32 BLAS matmul: the full Q x N score matrix is
never materialised, so extra memory is bounded by ``max_block_bytes`` (plus the Q x M x k result)
whatever Q and N. :class:`TopKScan` is the inner loop, shared with streamed calibration mining.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import as_embeddings, as_labels, l2_normalise, unique_in_order

DEFAULT_BLOCK_BYTES = 64 * 2**20


@dataclass
class ModalityTopK:
    """Each query's top-k candidates per modality, best first.

    ``indices[q, j, r]`` is the corpus row of query ``q``'s r-th best candidate of modality
    ``modalities[j]`` and ``scores`` its cosine; rows a modality cannot fill are -1 / -inf.
    """

    modalities: list[str]
    indices: np.ndarray  # [Q, M, k] int64
    scores: np.ndarray  # [Q, M, k] float32

    def of(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """(indices [Q, k], scores [Q, k]) for one modality."""
        if modality not in self.modalities:
            raise ValueError(f"unknown modality {modality!r}; known modalities: {self.modalities}")
        j = self.modalities.index(modality)
        return self.indices[:, j, :], self.scores[:, j, :]


@dataclass
class PseudoPositives(ModalityTopK):
    """Mined pseudo-positive pairs; :meth:`pairs` flattens them for a ``ModalityStandardizer``."""

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, candidate modality labels), one entry per mined pair (all top-k pooled)."""
        valid = self.indices >= 0
        labels = np.broadcast_to(
            np.asarray(self.modalities, dtype=object)[None, :, None], self.scores.shape
        )
        return self.scores[valid].astype(np.float64), labels[valid].astype(str)


SEED_COLUMNS = 512  # k > 1: columns partitioned to seed a not-yet-full row's threshold
UNIT_NORM_ATOL = 1e-6  # rows this close to unit length are used as they are (no score scaling pass)


def _inverse_norms(x: np.ndarray, name: str, block_rows: int) -> np.ndarray | None:
    """1/||row|| as float32, or None when every row is already unit length (the common, free case).

    Also the finiteness check of ``x`` (a NaN/inf row has a non-finite squared norm), so the
    caller reads the embeddings once for both. Squared norms are summed in float32 (fast); rows
    whose square may have underflowed or overflowed are redone in float64, so a tiny row is not a
    false "zero norm".
    """
    sq = np.empty(x.shape[0], dtype=np.float32)
    for s in range(0, x.shape[0], block_rows):
        blk = x[s : s + block_rows]
        np.einsum("ij,ij->i", blk, blk, out=sq[s : s + block_rows])
    norms = np.sqrt(sq, dtype=np.float64)
    odd = np.flatnonzero(~(np.isfinite(sq) & (sq > 1e-30) & (sq < 1e30)))
    if odd.size:
        rows = x[odd]
        bad = odd[~np.isfinite(rows).all(axis=1)]
        if bad.size:
            shown = ", ".join(str(i) for i in bad[:5])
            more = f" (and {bad.size - 5} more)" if bad.size > 5 else ""
            raise ValueError(f"{name}: contains NaN or inf in row(s) {shown}{more}")
        norms[odd] = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"{name}: row(s) {zero[:5].tolist()} have zero norm; cosine is undefined")
    if np.abs(norms - 1.0).max() <= UNIT_NORM_ATOL:
        return None
    return (1.0 / norms).astype(np.float32)


def _kth_largest(s: np.ndarray, kth: int, chunk_rows: int) -> np.ndarray:
    """Per row, the ``kth``-largest value (1-based) of ``s``; partitions a few rows at a time so the
    temporary copy stays small."""
    out = np.empty(s.shape[0], dtype=s.dtype)
    n = s.shape[1]
    for r in range(0, s.shape[0], chunk_rows):
        out[r : r + chunk_rows] = np.partition(s[r : r + chunk_rows], n - kth, axis=1)[:, n - kth]
    return out


def _merge_rows(best_s, best_i, rows, new_s, new_i):
    """Merge new (row, score, corpus index) entries into the rows of ``best_s``/``best_i``.

    ``rows`` must be sorted, and within a row the new indices ascending and above every index
    already kept (blocks are scanned in corpus order): then a stable sort by score alone breaks
    ties by the lower corpus row.
    """
    k = best_s.shape[1]
    touched, starts, counts = np.unique(rows, return_index=True, return_counts=True)
    width = k + int(counts.max())
    if touched.size * width > 4 * (rows.size + touched.size * k):
        # A few rows with very many hits (ties): a dense table would be mostly padding.
        sub_s, sub_i = best_s[touched], best_i[touched]
        local = np.repeat(np.arange(touched.size), counts)
        _merge_candidates(sub_s, sub_i, local, new_s, new_i, k)
        best_s[touched], best_i[touched] = sub_s, sub_i
        return
    dense_s = np.full((touched.size, width), -np.inf, dtype=best_s.dtype)
    dense_i = np.full((touched.size, width), -1, dtype=best_i.dtype)
    dense_s[:, :k], dense_i[:, :k] = best_s[touched], best_i[touched]
    local = np.repeat(np.arange(touched.size), counts)
    col = k + np.arange(rows.size) - np.repeat(starts, counts)
    dense_s[local, col], dense_i[local, col] = new_s, new_i
    order = np.argsort(-dense_s, axis=1, kind="stable")[:, :k]
    best_s[touched] = np.take_along_axis(dense_s, order, axis=1)
    best_i[touched] = np.take_along_axis(dense_i, order, axis=1)


def _merge_candidates(best_s, best_i, rows, new_s, new_i, k):
    """Merge sparse new (row, score, index) entries into the per-row sorted top-``k`` (in place).

    Order is score descending, then corpus index ascending: the same tie rule as a full sort.
    """
    n_rows = best_s.shape[0]
    all_r = np.concatenate([np.repeat(np.arange(n_rows), k), rows])
    all_s = np.concatenate([best_s.ravel(), new_s])
    all_i = np.concatenate([best_i.ravel(), new_i])
    # -1 marks "no candidate" (score -inf): sort it after every real index.
    tie = np.where(all_i < 0, np.iinfo(np.int64).max, all_i)
    order = np.lexsort((tie, -all_s, all_r))
    all_r, all_s, all_i = all_r[order], all_s[order], all_i[order]
    starts = np.searchsorted(all_r, np.arange(n_rows))
    keep = (np.arange(all_r.size) - starts[all_r]) < k
    best_s[...] = all_s[keep].reshape(n_rows, k)
    best_i[...] = all_i[keep].reshape(n_rows, k)


class TopKScan:
    """Scores the queries against one candidate block and merges the hits into running top-k arrays.

    The inner loop of :func:`topk_per_modality`, shared with streamed mining
    (:class:`~mmgap_core.calibration.streaming.StreamingTopK`), which feeds it corpus chunks in
    order while keeping ``best_s``/``best_i`` between them.

    Parameters
    ----------
    q : numpy.ndarray
        ``[Q, d]`` float32 C-contiguous queries (checked finite and non-zero here).
    k : int
        The widest list that will be asked for (sizes the buffers).
    max_block_bytes : int
        See :func:`topk_per_modality`; ``cb`` candidate rows make one block.
    """

    def __init__(self, q: np.ndarray, k: int, max_block_bytes: int):
        n_q, d = q.shape
        # A quarter of the budget for the candidate block (a gather when a modality is
        # interleaved), the rest for the score block. Candidate blocks are the outer loop so each
        # is gathered once.
        self.cb = cb = int(max(256, min(16384, (max_block_bytes // 4) // (4 * d))))
        # Per query row of a block: its scores (float32), its normalised copy, for k > 1 a mask.
        row_bytes = 4 * cb + 4 * d + (cb if k > 1 else 0)
        self.qb = qb = int(max(16, min(n_q, (max_block_bytes * 3 // 4) // row_bytes)))
        self.q, self.q_inv = q, _inverse_norms(q, "queries", cb)
        self.score_buf = np.empty((qb, cb), dtype=np.float32)
        self.q_buf = None if self.q_inv is None else np.empty((qb, d), dtype=np.float32)
        self.mask_buf = np.empty(qb * cb, dtype=bool) if k > 1 else None
        # k > 1 temporaries (partition copies, (row, col) hit lists) are processed a few rows at a
        # time so that each stays within a sixteenth of the budget.
        self.part_rows = max(1, (max_block_bytes // 16) // (8 * min(cb, SEED_COLUMNS)))
        self.max_hits = max(cb, (max_block_bytes // 16) // 32)
        self.q_rows = np.arange(qb)

    def scan(self, blk, blk_inv, blk_rows, best_s, best_i, exclude=None) -> None:
        """Merge one block of at most :attr:`cb` candidates into ``best_s``/``best_i`` (in place).

        Parameters
        ----------
        blk : numpy.ndarray
            ``[nb, d]`` float32 candidates.
        blk_inv : numpy.ndarray or None
            Their ``1/norm`` (``None``: unit rows).
        blk_rows : numpy.ndarray
            Their corpus rows, ascending and above every row already kept.
        best_s, best_i : numpy.ndarray
            ``[Q, kk]`` running scores (``-inf`` when empty) and rows (-1), best first.
        exclude : numpy.ndarray, optional
            ``[Q]`` corpus row each query must not get (-1 for none).
        """
        q, q_inv, q_rows = self.q, self.q_inv, self.q_rows
        n_q, kk, nb = q.shape[0], best_s.shape[1], blk_rows.size
        for qs in range(0, n_q, self.qb):
            qe = min(qs + self.qb, n_q)
            nq = qe - qs
            if q_inv is None:
                q_blk = q[qs:qe]
            else:
                q_blk = np.multiply(q[qs:qe], q_inv[qs:qe, None], out=self.q_buf[:nq])
            s = self.score_buf[:nq, :nb]
            np.matmul(q_blk, blk.T, out=s)
            if blk_inv is not None:
                s *= blk_inv
            if exclude is not None:
                self_rows = exclude[qs:qe]
                pos = np.searchsorted(blk_rows, self_rows)
                hit = (self_rows >= 0) & (pos < nb)
                hit[hit] = blk_rows[pos[hit]] == self_rows[hit]
                s[q_rows[:nq][hit], pos[hit]] = -np.inf
            if kk == 1:
                a = s.argmax(axis=1)
                v = s[q_rows[:nq], a]
                bs, bi = best_s[qs:qe, 0], best_i[qs:qe, 0]
                better = v > bs  # strict: on a tie the earlier (lower) corpus row stays
                bs[better] = v[better]
                bi[better] = blk_rows[a[better]]
                continue
            # Only scores above each row's current k-th best can enter its top-k. Rows not yet
            # full use this block's own k-th best, so few entries pass and no full-block sort
            # (nor an int64 index array of the block's size) is ever needed.
            thr = best_s[qs:qe, kk - 1].copy()
            unfilled = np.flatnonzero(thr == -np.inf)
            seed_cols = min(nb, SEED_COLUMNS)
            if unfilled.size and seed_cols >= kk:
                # The k-th best of a few columns is a valid (lower) threshold for the whole block
                # and much cheaper than partitioning all of it; a few dozen extra hits per row.
                local = _kth_largest(s[unfilled, :seed_cols], kk, self.part_rows)
                # s > nextafter(t, -inf) is s >= t; a -inf threshold still drops excluded rows.
                thr[unfilled] = np.nextafter(local, np.float32(-np.inf))
            # A contiguous mask, so that flatnonzero (much faster than a 2-D nonzero) applies.
            mask = self.mask_buf[: nq * nb].reshape(nq, nb)
            np.greater(s, thr[:, None], out=mask)
            hits = np.count_nonzero(mask)
            if hits == 0:
                continue
            # Usually ~k hits per row; many ties can make it the whole block: go in row chunks.
            step = nq if hits <= self.max_hits else max(1, self.max_hits // nb)
            for r0 in range(0, nq, step):
                flat = np.flatnonzero(mask[r0 : r0 + step])
                if flat.size:
                    r, c = np.divmod(flat, nb)
                    _merge_rows(best_s, best_i, qs + r0 + r, s[r0 + r, c], blk_rows[c])


def topk_per_modality(
    queries,
    candidates,
    candidate_modalities,
    k: int = 1,
    *,
    exclude: np.ndarray | None = None,
    modalities: list[str] | None = None,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> ModalityTopK:
    """Exact top-``k`` cosine candidates of each modality for each query.

    Parameters
    ----------
    queries : [Q, d] array. Not copied when float32 and C-contiguous; rows that are not unit
        length are normalised one block at a time.
    candidates : [N, d] array. Not copied when float32 and C-contiguous; rows that are not unit
        length are handled by scaling scores, so no normalised copy of the corpus is made.
    candidate_modalities : N labels.
    exclude : optional [Q] int array: the corpus row that query ``q`` itself is (-1 for none).
        That row is never returned for ``q`` (self-exclusion, for calibration queries drawn from
        the corpus).
    modalities : the modalities to search, in output order (default: all present, in first-seen
        order).
    max_block_bytes : memory for one block of scores, one gathered block of candidates and one
        block of normalised queries (about; at least 256 candidate rows and 16 query rows a block).

    Ties are broken by the lower corpus row. Extra memory is about ``max_block_bytes`` plus the
    ``Q x M x k`` result plus O(N) bookkeeping (modality row lists, norms), independent of
    ``Q x N``.
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if max_block_bytes < 2**20:
        raise ValueError("max_block_bytes must be at least 1 MiB")
    # NaN/inf are caught by _inverse_norms below, in the same pass as the norms.
    cand = as_embeddings(candidates, "candidates", finite=False)
    q = as_embeddings(queries, "queries", dim=cand.shape[1], finite=False)
    labels = as_labels(candidate_modalities, "candidate_modalities", cand.shape[0])
    present = unique_in_order(labels)
    if modalities is None:
        modalities = present
    else:
        if isinstance(modalities, str):
            raise ValueError(
                f"modalities: expected a list of labels, got the string {modalities!r}"
            )
        modalities = [str(m) for m in modalities]
        if not modalities:
            raise ValueError("modalities: empty list; name at least one modality to search")
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities: duplicate labels in {modalities}")
        for m in modalities:
            if m not in present:
                raise ValueError(
                    f"modality {m!r} has no candidates; modalities present in the corpus: {present}"
                )
    n_q, d = q.shape
    if exclude is not None:
        exclude = np.asarray(exclude)
        if exclude.shape != (n_q,) or not np.issubdtype(exclude.dtype, np.integer):
            raise ValueError(f"exclude: expected {n_q} integer row numbers (-1 for none)")
        if exclude.size and (exclude.max() >= cand.shape[0] or exclude.min() < -1):
            raise ValueError(f"exclude: row numbers must be in [-1, {cand.shape[0] - 1}]")
        exclude = exclude.astype(np.int64, copy=False)

    scan = TopKScan(q, k, max_block_bytes)
    cb = scan.cb
    c_inv = _inverse_norms(cand, "candidates", cb)
    n_mod = len(modalities)
    out_s = np.full((n_q, n_mod, k), -np.inf, dtype=np.float32)
    out_i = np.full((n_q, n_mod, k), -1, dtype=np.int64)
    gather_buf = None
    for j, m in enumerate(modalities):
        rows = np.flatnonzero(labels == m)
        contiguous = rows[-1] - rows[0] + 1 == rows.size
        if not contiguous and (gather_buf is None or gather_buf.shape[0] < min(cb, rows.size)):
            gather_buf = np.empty((min(cb, rows.size), d), dtype=np.float32)
        kk = min(k, rows.size)
        best_s = np.full((n_q, kk), -np.inf, dtype=np.float32)
        best_i = np.full((n_q, kk), -1, dtype=np.int64)
        for cs in range(0, rows.size, cb):
            blk_rows = rows[cs : cs + cb]
            nb = blk_rows.size
            # Views when the modality is stored contiguously, else one gather per block (amortised).
            if contiguous:
                blk = cand[blk_rows[0] : blk_rows[0] + nb]
            else:  # into one reused buffer: no second gather alive while the next is made
                # mode="clip": rows are valid; the default "raise" buffers `out` (twice the time).
                blk = np.take(cand, blk_rows, axis=0, out=gather_buf[:nb], mode="clip")
            blk_inv = None if c_inv is None else c_inv[blk_rows]
            scan.scan(blk, blk_inv, blk_rows, best_s, best_i, exclude)
        # A self-excluded singleton modality leaves -inf: mark it as "no candidate".
        best_i[~np.isfinite(best_s)] = -1
        out_s[:, j, :kk] = best_s
        out_i[:, j, :kk] = best_i
    return ModalityTopK(list(modalities), out_i, out_s)


def mine_pseudo_positives(
    queries,
    candidates,
    candidate_modalities,
    *,
    top_k: int = 1,
    exclude: np.ndarray | None = None,
    modalities: list[str] | None = None,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> PseudoPositives:
    """Pseudo-positive pairs: each query's highest-cosine candidate of each modality (no labels).

    With ``top_k > 1`` the top-k per modality are pooled as pairs. ``exclude`` gives, per query, the
    corpus row that the query itself is (-1 for none), so an item is never its own pseudo-positive.
    See :func:`topk_per_modality` for the other parameters.
    """
    res = topk_per_modality(
        queries,
        candidates,
        candidate_modalities,
        top_k,
        exclude=exclude,
        modalities=modalities,
        max_block_bytes=max_block_bytes,
    )
    return PseudoPositives(res.modalities, res.indices, res.scores)


def gold_pair_scores(
    queries, candidates, candidate_modalities, pairs
) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of labelled (query row, candidate row) positive pairs and their candidate modalities.

    Feeding these to :class:`ModalityStandardizer` gives the *gold* statistics: an upper bound to
    compare pseudo-positive calibration against.
    """
    cand = as_embeddings(candidates, "candidates")
    q = as_embeddings(queries, "queries", dim=cand.shape[1])
    labels = as_labels(candidate_modalities, "candidate_modalities", cand.shape[0])
    p = np.asarray(pairs)
    if p.ndim != 2 or p.shape[1] != 2 or (p.size and not np.issubdtype(p.dtype, np.integer)):
        raise ValueError("pairs: expected an [n, 2] integer array of (query row, candidate row)")
    if p.shape[0] == 0:
        raise ValueError("pairs: no labelled pairs given")
    if p[:, 0].min() < 0 or p[:, 0].max() >= q.shape[0]:
        raise ValueError(f"pairs: query row out of range [0, {q.shape[0] - 1}]")
    if p[:, 1].min() < 0 or p[:, 1].max() >= cand.shape[0]:
        raise ValueError(f"pairs: candidate row out of range [0, {cand.shape[0] - 1}]")
    qn = l2_normalise(q[np.unique(p[:, 0])], "queries")
    q_pos = np.searchsorted(np.unique(p[:, 0]), p[:, 0])
    cn = l2_normalise(cand[p[:, 1]], "candidates")
    scores = np.einsum("ij,ij->i", qn[q_pos], cn)
    return scores.astype(np.float64), labels[p[:, 1]]


def context_candidates(
    queries,
    corpus,
    labels,
    pools,
    modalities=("text", "image"),
    *,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> ModalityTopK:
    """Rank each query's own candidate pool per modality: cosine scores, best first.

    Parameters
    ----------
    queries : array_like, shape (Q, d)
        Query embeddings.
    corpus : array_like, shape (N, d)
        Candidate embeddings.
    labels : array_like of str, shape (N,)
        Modality of each corpus row.
    pools : sequence of sequence of int
        ``pools[q]`` lists the corpus rows query ``q`` may retrieve (its context pool).
    modalities : sequence of str, default ("text", "image")
        The modalities to rank, in output order.
    max_block_bytes : int
        Passed to :func:`topk_per_modality`.

    Returns
    -------
    ModalityTopK
        Lists padded with -1 / -inf to the longest pool of any modality.

    Raises
    ------
    ValueError
        Not one pool per query, or bad embeddings (see :func:`topk_per_modality`).

    Notes
    -----
    Each pool is ranked by :func:`topk_per_modality` over its own rows (sorted), so scores and the
    tie rule (the lower corpus row first) are the ones every other search here uses.
    """
    cand = as_embeddings(corpus, "corpus", allow_empty=True, finite=False)
    q = as_embeddings(queries, "queries", dim=cand.shape[1], allow_empty=True, finite=False)
    labels = as_labels(labels, "labels", cand.shape[0])
    n_q = q.shape[0]
    if len(pools) != n_q:
        raise ValueError(f"pools: expected one pool per query ({n_q}), got {len(pools)}")
    modalities = [str(m) for m in modalities]
    rows = [np.sort(np.asarray(p, dtype=np.int64).reshape(-1)) for p in pools]
    for r in rows:
        if r.size and (r[0] < 0 or r[-1] >= cand.shape[0]):
            raise ValueError(f"pools: corpus rows must be in [0, {cand.shape[0] - 1}]")
    width = max([1] + [int((labels[r] == m).sum()) for r in rows for m in modalities])
    indices = np.full((n_q, len(modalities), width), -1, dtype=np.int64)
    scores = np.full((n_q, len(modalities), width), -np.inf, dtype=np.float32)
    for qi, r in enumerate(rows):
        lab = labels[r]
        present = [m for m in modalities if (lab == m).any()]
        if not present:
            continue
        top = topk_per_modality(
            q[qi : qi + 1],
            cand[r],
            lab,
            width,
            modalities=present,
            max_block_bytes=max_block_bytes,
        )
        for jj, m in enumerate(present):
            j = modalities.index(m)
            found = top.indices[0, jj]
            n = int((found >= 0).sum())  # filled entries come first
            indices[qi, j, :n] = r[found[:n]]
            scores[qi, j, :n] = top.scores[0, jj, :n]
    return ModalityTopK(modalities, indices, scores)
