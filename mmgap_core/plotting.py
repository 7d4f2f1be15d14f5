"""Plots of the modality gap (matplotlib, imported lazily: `pip install mmgap[plot]`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .stats import ModalityStandardizer


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'mmgap[plot]'") from exc
    return plt


def plot_gap(
    panels: Mapping[str, tuple[Mapping[str, np.ndarray], ModalityStandardizer, str]],
    path,
    *,
    what: str = "each query's best score per modality",
) -> Path:
    """Histograms of raw and standardized scores per modality, one row per panel.

    ``panels`` maps a title to ``(scores by candidate modality, fitted standardizer, query modality)``.
    Raw scores sit apart by modality (the gap); standardized ones overlap when the gap is closed.
    """
    plt = _pyplot()
    path = Path(path)
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
