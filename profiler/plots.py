"""Plots as PNG files, written atomically; matplotlib with the Agg backend (no screen)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure to ``path`` atomically and close it."""
    from data_prep.io import atomic_path

    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def confusion_heatmap(scores: dict, path: str | Path, *, title: str) -> Path:
    """A row-normalised confusion matrix heat-map (share of each true class), counts annotated."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    labels = scores["confusion"]["labels"]
    counts = np.array(scores["confusion"]["matrix"], dtype=float)
    rows = counts.sum(axis=1, keepdims=True) + np.array(scores["confusion"]["missing"])[:, None]
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 2.2 + 0.55 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    display = ConfusionMatrixDisplay(shares, display_labels=labels)
    display.plot(ax=ax, cmap="Blues", values_format=".2f", colorbar=True, xticks_rotation=45)
    display.im_.set_clim(0, 1)
    ax.set_title(f"{title}\nF {scores['F']:.3f}  Acc {scores['Acc']:.3f}  (rows: share of true class)")
    return save_figure(fig, path)
