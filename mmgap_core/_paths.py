"""Path checks shared by the commands, the store factory and the plots (no I/O beyond ``stat``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["nearest_existing_parent"]


def nearest_existing_parent(path: Path) -> Path:
    """The closest ancestor of ``path`` that exists: where writing ``path`` would start.

    Parameters
    ----------
    path : pathlib.Path
        A file or folder that may not exist yet.

    Returns
    -------
    pathlib.Path
        ``path.parent`` if it exists, else its nearest existing ancestor (at worst the root). The
        caller checks that it is a folder.
    """
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent
