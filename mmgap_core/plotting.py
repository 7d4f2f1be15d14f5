"""Plots of the modality gap (matplotlib, imported lazily: ``pip install mmgap[plot]``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ._paths import nearest_existing_parent
from .stats import ModalityStandardizer

__all__ = ["PLOT_SUFFIXES", "check_plot_path", "plot_gap"]

logger = logging.getLogger(__name__)

#: File types matplotlib writes without extra packages, chosen by the output file's suffix.
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'mmgap[plot]'") from exc
    return plt


def check_plot_path(path) -> Path:
    """Check an output path for :func:`plot_gap` before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        The image file to write; its suffix picks the format.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        For a suffix matplotlib cannot write, or a path that is a folder.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"plot path {path} is a folder; give a file name such as gap.png")
    parent = nearest_existing_parent(p)
    if not parent.is_dir():
        raise ValueError(f"plot path {path}: {parent} is not a folder")
    if p.suffix.lower() not in PLOT_SUFFIXES:
        raise ValueError(
            f"plot path {path}: unknown image type {p.suffix or '(none)'!r}; use one of "
            f"{', '.join(PLOT_SUFFIXES)}"
        )
    return p


def plot_gap(
    panels: Mapping[str, tuple[Mapping[str, np.ndarray], ModalityStandardizer, str]],
    path,
    *,
    what: str = "each query's best score per modality",
) -> Path:
    """Histograms of raw and standardized scores per modality, one row per panel.

    Raw scores sit apart by modality (the gap); standardized ones overlap when the gap is closed.

    Parameters
    ----------
    panels : mapping
        A title per row, mapped to ``(scores by candidate modality, fitted standardizer, query
        modality)``.
    path : str or os.PathLike
        Output image file (see :data:`PLOT_SUFFIXES`); its folder is created if needed.
    what : str
        What the scores are, for the x-axis label.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        For an unusable path (:func:`check_plot_path`) or no panels.
    ImportError
        Without matplotlib.
    """
    path = check_plot_path(path)
    if not panels:
        raise ValueError("nothing to plot: no panel has scores")
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.2 * len(panels)), squeeze=False)
    for row, (title, (scores, standardizer, qmod)) in enumerate(panels.items()):
        for col, kind in enumerate(("raw cosine", "standardized (z)")):
            ax = axes[row, col]
            for modality, values in scores.items():
                v = np.asarray(values, dtype=np.float64)
                if col == 1:
                    v = standardizer.transform(v, modality, qmod)
                ax.hist(v, bins=40, alpha=0.55, label=f"{modality} (mean {v.mean():.2f})")
            ax.set_title(f"{title}: {kind}", fontsize=10)
            ax.set_xlabel(f"{qmod} query vs candidate: {what}", fontsize=8)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    logger.debug("wrote %s", path)
    return path
