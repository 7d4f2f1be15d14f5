"""Input checks shared by the core. Every failure is a ValueError that names the problem."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_FLOAT32 = np.dtype(np.float32)


def as_embeddings(
    x,
    name: str,
    *,
    dim: int | None = None,
    allow_empty: bool = False,
    finite: bool = True,
    allow_1d: bool = False,
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 2-D array, after checking shape and finiteness.

    The one embedding validator of mmgap: the math, the engine and the stores all use it.

    Parameters
    ----------
    x : array_like
        ``[n, d]`` numbers.
    name : str
        What ``x`` is, for error messages (``"queries"``, ``"query embedding"``, ...).
    dim : int, optional
        The number of columns required.
    allow_empty : bool, default False
        Accept 0 rows.
    finite : bool, default True
        Check for NaN/inf. ``False`` skips that pass, for callers that detect it in a pass of their
        own (e.g. while computing row norms).
    allow_1d : bool, default False
        Accept a single vector ``[d]`` as one row ``[1, d]``.

    Returns
    -------
    numpy.ndarray
        ``x`` itself when it already is float32, 2-D and C-contiguous; else a converted copy.

    Raises
    ------
    ValueError
        Naming ``name`` and the problem.
    """
    if type(x) is np.ndarray:  # no conversion to try (a search's query vector)
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise ValueError(f"{name}: cannot be read as a 2-D array of numbers ({exc})") from exc
    if allow_1d and arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        expected = "a vector [dim] or a 2-D array [n, dim]" if allow_1d else "a 2-D array [n, dim]"
        raise ValueError(f"{name}: expected {expected}, got shape {arr.shape}")
    # float32 and C-contiguous already (the usual query): nothing to check or convert.
    if arr.dtype is not _FLOAT32 or not arr.flags.c_contiguous:
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name}: is empty (0 rows)")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: has dimension 0")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name}: dimension mismatch, expected {dim} columns, got {arr.shape[1]}")
    if finite:
        check_finite(arr, name)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming the first rows of ``arr`` that hold NaN or inf."""
    # A float64 sum is one pass with no full-size temporary; NaN/inf anywhere makes it non-finite.
    # (np.add.reduce and math.isfinite: no Python-level numpy wrappers on a search's path.)
    if arr.size and not math.isfinite(np.add.reduce(arr, axis=None, dtype=np.float64)):
        bad_rows = np.flatnonzero(~np.isfinite(arr).all(axis=tuple(range(1, arr.ndim))))
        if bad_rows.size:
            shown = ", ".join(str(i) for i in bad_rows[:5])
            more = f" (and {bad_rows.size - 5} more)" if bad_rows.size > 5 else ""
            raise ValueError(f"{name}: contains NaN or inf in row(s) {shown}{more}")


def as_labels(labels, name: str, n: int | None = None) -> np.ndarray:
    """Modality labels as a 1-D array of non-empty str."""
    if isinstance(labels, str):
        raise ValueError(f"{name}: expected one label per row, got a single string {labels!r}")
    if isinstance(labels, np.ndarray) and labels.dtype.kind == "U":
        # Fast path, no per-element Python objects: matters for corpus-sized label arrays.
        if labels.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D sequence of labels, got shape {labels.shape}")
        if n is not None and labels.shape[0] != n:
            raise ValueError(f"{name}: has {labels.shape[0]} labels for {n} rows")
        blank = np.flatnonzero(np.char.str_len(np.char.strip(labels)) == 0)
        if blank.size:
            i = int(blank[0])
            raise ValueError(
                f"{name}: label {i} is {str(labels[i])!r}; labels must be non-empty strings"
            )
        return labels
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of labels, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: has {arr.shape[0]} labels for {n} rows")
    for i, lab in enumerate(arr):
        if not isinstance(lab, str) or not lab.strip():
            raise ValueError(f"{name}: label {i} is {lab!r}; labels must be non-empty strings")
    return arr.astype(str)


def check_modality(label: str, known: Sequence[str], what: str) -> str:
    """``label`` if it is one of ``known``, else ``ValueError`` listing them."""
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{what}: modality must be a non-empty string, got {label!r}")
    if label not in known:
        raise ValueError(f"{what}: unknown modality {label!r}; known modalities: {sorted(known)}")
    return label


def unique_in_order(labels: np.ndarray) -> list[str]:
    """The distinct labels, in order of first appearance."""
    _, first = np.unique(labels, return_index=True)
    return [str(labels[i]) for i in sorted(first)]


def l2_normalise(x: np.ndarray, name: str) -> np.ndarray:
    """Row-normalised float32 copy; a zero row is an error (its cosine is undefined)."""
    # float64 norms: tiny rows must not underflow to a false zero, huge ones not overflow to inf.
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"{name}: row(s) {zero[:5].tolist()} have zero norm; cosine is undefined")
    return (x / norms[:, None]).astype(np.float32, copy=False)


def int_at_least(value, name: str, minimum: int) -> int:
    """``value`` as a plain ``int`` if it is an integer >= ``minimum`` (``bool`` refused).

    Raises ``ValueError`` naming ``name`` otherwise.
    """
    if type(value) is int and value >= minimum:  # the usual case, checked first: a search's k
        return value
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def positive_int(value, name: str) -> int:
    """``value`` as a plain ``int`` if it is an integer >= 1 (``bool`` refused), else ValueError."""
    return int_at_least(value, name, 1)


def check_query(text: str | None, image: Any) -> None:
    """The query errors that need no model: neither or both given, an empty text, a missing file."""
    if (text is None) == (image is None):
        raise ValueError("give exactly one of text= or image=")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise ValueError("empty query: give a non-empty text")
    if isinstance(image, (str, os.PathLike)) and not Path(image).exists():
        raise ValueError(f"query image not found: {image}")
