"""Reading the ``mmgap eval`` file formats: embeddings (.npy), modality labels, ids, TREC qrels.

Every reader raises ``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._validation import as_embeddings


def load_embeddings(path, name: str, dim: int | None = None) -> np.ndarray:
    """An embedding matrix from a ``.npy`` file (no pickles), validated.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npy`` file.
    name : str
        What the file holds, for error messages (``"corpus"``, ``"queries"``).
    dim : int, optional
        The number of columns required.

    Returns
    -------
    numpy.ndarray
        ``[n, d]`` float32, finite.

    Raises
    ------
    ValueError
        A missing or unreadable file, or a bad array.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{name}: {path} is not a readable .npy array ({exc})") from exc
    return as_embeddings(arr, f"{name} ({path.name})", dim=dim)


def read_lines(path, name: str) -> list[str]:
    """The stripped lines of a UTF-8 text file (trailing blank lines are fine).

    Parameters
    ----------
    path : str or os.PathLike
    name : str
        What the file holds, for error messages.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        A missing file, one that is not UTF-8, or an empty line before the end.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: {path} is not UTF-8 text ({exc})") from exc
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"{name}: {path} line {i} is empty")
    return [ln.strip() for ln in lines]


def load_modalities(path, n_rows: int) -> np.ndarray:
    """One modality label per corpus row, a label a line.

    Parameters
    ----------
    path : str or os.PathLike
    n_rows : int
        The number of corpus rows; the file must hold as many labels.

    Returns
    -------
    numpy.ndarray
        ``[n_rows]`` str labels.

    Raises
    ------
    ValueError
        See :func:`read_lines`, or a count that does not match.
    """
    labels = read_lines(path, "modality")
    if len(labels) != n_rows:
        raise ValueError(f"modality: {path} has {len(labels)} labels for {n_rows} corpus rows")
    return np.asarray(labels, dtype=str)


def load_ids(path, n_rows: int, name: str) -> list[str]:
    """One unique id per embedding row, an id a line.

    Parameters
    ----------
    path : str or os.PathLike
    n_rows : int
        The number of embedding rows; the file must hold as many ids.
    name : str
        What the ids name, for error messages.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        See :func:`read_lines`, a count that does not match, or duplicate ids.
    """
    ids = read_lines(path, name)
    if len(ids) != n_rows:
        raise ValueError(f"{name}: {path} has {len(ids)} ids for {n_rows} rows of embeddings")
    dup = len(ids) - len(set(ids))
    if dup:
        raise ValueError(f"{name}: {path} has {dup} duplicate id(s)")
    return ids


def parse_qrels(
    path, query_ids: list[str] | None, doc_ids: list[str] | None, n_queries: int, n_docs: int
) -> tuple[np.ndarray, list[str]]:
    """Read TREC qrels, ``query_id 0 doc_id relevance`` a line (``#`` comments allowed).

    Parameters
    ----------
    path : str or os.PathLike
    query_ids, doc_ids : list of str or None
        The ids of the query and corpus rows. Without them, ids are row numbers written as
        decimal strings.
    n_queries, n_docs : int
        The number of query and corpus rows.

    Returns
    -------
    rows : numpy.ndarray
        ``[n, 3]`` int64 rows of (query row, doc row, relevance).
    notes : list of str
        Warnings for the caller: judgements of unknown ids are skipped and reported, not
        silently dropped.

    Raises
    ------
    ValueError
        A missing file, a malformed line, a string id without an id list, or no positive
        judgement at all.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"qrels: file not found: {path}")
    q_index = {q: i for i, q in enumerate(query_ids)} if query_ids is not None else None
    d_index = {d: i for i, d in enumerate(doc_ids)} if doc_ids is not None else None

    def row_of(token: str, index, n: int, what: str, lineno: int):
        if index is not None:
            return index.get(token)
        if not token.isdigit():
            raise ValueError(
                f"qrels: {path} line {lineno}: {what} id {token!r} is not a row number; "
                f"pass --{what}-ids to map string ids"
            )
        row = int(token)
        return row if row < n else None

    rows, unknown = [], {"query": 0, "doc": 0}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 4:
                raise ValueError(
                    f"qrels: {path} line {lineno}: expected 4 fields "
                    f"`query_id 0 doc_id relevance`, got {len(parts)}: {line.strip()!r}"
                )
            try:
                rel = int(parts[3])
            except ValueError:
                raise ValueError(
                    f"qrels: {path} line {lineno}: relevance {parts[3]!r} is not an integer"
                ) from None
            q = row_of(parts[0], q_index, n_queries, "query", lineno)
            d = row_of(parts[2], d_index, n_docs, "doc", lineno)
            if q is None:
                unknown["query"] += 1
                continue
            if d is None:
                unknown["doc"] += 1
                continue
            rows.append((q, d, rel))
    notes = [f"qrels: skipped {n} judgement(s) of unknown {w} ids" for w, n in unknown.items() if n]
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    if not (arr[:, 2] > 0).any():
        raise ValueError(
            f"qrels: {path} holds no positive judgement for these queries and documents"
        )
    return arr, notes
