"""Paths named by dataset records, confined to the folder they are relative to.

A record (an MMQA image's ``path``) must not make a loader read outside the dataset: a name that
climbs out with ``..``, an absolute name, or a symlink leading out of the folder is refused with a
reason the loader counts in ``BenchmarkDataset.skipped``. Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "SKIP_PATH_INVALID",
    "SKIP_PATH_OUTSIDE",
    "UnsafePathError",
    "confined_path",
    "resolve_folder",
]

SKIP_PATH_OUTSIDE = "image path outside the image folder"
SKIP_PATH_INVALID = "image path invalid (empty, NUL byte or symlink loop)"


class UnsafePathError(ValueError):
    """A path named by a dataset record that cannot be used safely.

    Attributes
    ----------
    reason : str
        :data:`SKIP_PATH_OUTSIDE` or :data:`SKIP_PATH_INVALID`, the key loaders count it under.
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def resolve_folder(folder: str | os.PathLike) -> Path:
    """Return ``folder`` resolved (symlinks followed): the base for :func:`confined_path`."""
    return Path(folder).resolve()


def confined_path(base: Path, name: str) -> Path:
    """Resolve ``base / name`` and check that it lies inside ``base``.

    A record's ``name`` may not climb out with ``..``, be absolute, or pass through a symlink
    that leads out of ``base``: the path is resolved (every symlink followed) and must lie
    strictly inside the resolved ``base``. ``base`` itself may be a symlinked folder: the user
    laid it out, the record did not.

    Parameters
    ----------
    base : pathlib.Path
        The folder the record's paths are relative to, already resolved (see
        :func:`resolve_folder`).
    name : str
        The path as the record gives it.

    Returns
    -------
    pathlib.Path
        The resolved path.

    Raises
    ------
    UnsafePathError
        The path leaves ``base`` (``reason`` :data:`SKIP_PATH_OUTSIDE`), or it is empty, holds a
        NUL byte or loops (``reason`` :data:`SKIP_PATH_INVALID`).
    """
    if not name or "\x00" in name:
        raise UnsafePathError(
            f"image path {name!r} is empty or holds a NUL byte", SKIP_PATH_INVALID
        )
    joined = base / name
    try:
        resolved = joined.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop before Python 3.13
        raise UnsafePathError(
            f"image path {name!r} cannot be resolved: {exc}", SKIP_PATH_INVALID
        ) from None
    if resolved == base:
        raise UnsafePathError(f"image path {name!r} names the folder itself", SKIP_PATH_INVALID)
    if not resolved.is_relative_to(base):
        raise UnsafePathError(
            f"image path {name!r} resolves to {resolved}, outside {base}", SKIP_PATH_OUTSIDE
        )
    return resolved
