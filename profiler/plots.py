"""Plots as PNG files, written atomically; matplotlib with the Agg backend (no screen)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: the figure formats a file's extension may ask for (``save_figure``); any other name is PNG
FIGURE_FORMATS = {".pdf": "pdf", ".svg": "svg", ".jpg": "jpeg", ".jpeg": "jpeg"}


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure to ``path`` atomically and close it: PDF, SVG or JPEG where the
    name ends so (``FIGURE_FORMATS``), PNG otherwise."""
    from core.io import atomic_path

    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=FIGURE_FORMATS.get(Path(path).suffix.lower(), "png"), dpi=110, bbox_inches="tight")
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


def file_slug(name: str) -> str:
    """A system's name as part of a file name: every character but letters and digits made ``_``."""
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def confusion_heatmaps(results: dict, folder: str | Path) -> list[Path]:
    """``confusion_<system>_<trait>.png`` in ``folder`` for each system's scores in ``results``
    (the system's name with every character but letters and digits made ``_``)."""
    written = []
    for name, result in results.items():
        slug = file_slug(name)
        for trait, scores in result["traits"].items():
            written.append(confusion_heatmap(scores, Path(folder) / f"confusion_{slug}_{trait}.png",
                                             title=f"{name}: {trait}"))
    return written


def reliability_diagram(arrays: dict[str, tuple], path: str | Path, *, title: str) -> Path:
    """Accuracy against top-label confidence per trait (15 equal-width bins), with the
    temperatures undone and as predicted; ``arrays`` maps a trait to (before, after, labels)."""
    from sklearn.calibration import calibration_curve

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(arrays), figsize=(4 * len(arrays), 4), squeeze=False)
    for ax, (trait, (before, after, labels)) in zip(axes[0], arrays.items()):
        ax.plot([0, 1], [0, 1], ":", color="grey", label="calibrated")
        for probs, name in ((before, "raw softmax"), (after, "with temperature")):
            correct = (probs.argmax(axis=1) == labels).astype(int)
            accuracy, confidence = calibration_curve(correct, probs.max(axis=1), n_bins=15, strategy="uniform")
            ax.plot(confidence, accuracy, "o-", label=name)
        ax.set(xlabel="confidence of the predicted class", ylabel="accuracy", title=trait, xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}: reliability")
    return save_figure(fig, path)


def _blank(ax):
    """An axis for an image: no ticks, no frame."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return ax


def contact_sheet(dataset: str | Path, path: str | Path, *, users: int = 6, size: int = 96) -> Path:
    """A grid of the first ``users`` users of a dataset: one row each, labels on the left."""
    from data_prep.dataset import load_dataset
    from core.errors import ImageError
    from data_prep.images import load_image

    plt = _pyplot()
    ds = load_dataset(dataset, missing="warn")
    chosen = ds.users[:users]
    columns = max(len(u.files) for u in chosen)
    fig, axes = plt.subplots(len(chosen), columns, figsize=(1.2 * columns + 1.6, 1.35 * len(chosen)),
                             squeeze=False)
    for r, user in enumerate(chosen):
        for c in range(columns):
            ax = _blank(axes[r][c])
            if c >= len(user.files):
                continue
            try:
                ax.imshow(load_image(user.files[c], (size, size)))
            except ImageError as exc:
                ax.text(0.5, 0.5, "broken:\n" + exc.reason.split(" (")[0][:24], ha="center",
                        va="center", fontsize=6, color="crimson", transform=ax.transAxes)
        labels = user.labels or {}
        axes[r][0].set_ylabel("\n".join([user.user_id[:8]] + list(labels.values())), rotation=0,
                              ha="right", va="center", fontsize=7)
    fig.suptitle(f"{Path(dataset).name}: {len(chosen)} users, one row each", fontsize=9)
    return save_figure(fig, path)


def training_curves(history_csv: str | Path, path: str | Path, *, title: str,
                    weighted: bool = False) -> Path:
    """Loss (train and validation) and validation macro-F per head, by epoch.

    ``weighted``: the training loss carries class weights (the validation loss never does).
    """
    import pandas as pd

    from core.labels import TRAITS

    plt = _pyplot()
    history = pd.read_csv(history_csv)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = history["epoch"]
    for trait in TRAITS:
        line, = left.plot(epochs, history[f"{trait}_loss"],
                          label=f"{trait} train" + (" (class-weighted)" if weighted else ""))
        left.plot(epochs, history[f"val_loss_{trait}"], "--", color=line.get_color(), label=f"{trait} val")
        right.plot(epochs, history[f"val_macro_f_{trait}"], label=trait)
    right.plot(epochs, history["val_mean_macro_f"], "k-", linewidth=2, label="mean")
    left.set(xlabel="epoch", ylabel="cross-entropy", title="loss per head")
    right.set(xlabel="epoch", ylabel="macro-F", title="validation macro-F per head", ylim=(0, 1))
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def explanation_sheet(folder: str | Path, evidence: dict, path: str | Path, *, title: str, size: int = 96) -> Path:
    """One user's images ranked by their effect on each trait's prediction: a row per trait,
    most supportive first, each image with its effect (green: for the class, red: against),
    the trait's class and probability on the left. ``evidence``: ``prediction.explain_user``'s."""
    from core.errors import ImageError
    from data_prep.images import load_image

    plt = _pyplot()
    columns = max(len(e["images"]) for e in evidence.values())
    fig, axes = plt.subplots(len(evidence), columns, figsize=(1.25 * columns + 1.9, 1.55 * len(evidence)),
                             squeeze=False)
    for r, (trait, e) in enumerate(evidence.items()):
        for c in range(columns):
            ax = _blank(axes[r][c])
            if c >= len(e["images"]):
                continue
            item = e["images"][c]
            try:
                ax.imshow(load_image(Path(folder) / item["file"], (size, size)))
            except ImageError as exc:
                ax.text(0.5, 0.5, exc.reason.split(" (")[0][:24], ha="center", va="center", fontsize=6,
                        transform=ax.transAxes)
            effect = item["effect"]
            ax.set_title(f"{effect:+.3f}", fontsize=7, color="forestgreen" if effect > 0 else
                         "crimson" if effect < 0 else "dimgray")
        axes[r][0].set_ylabel(f"{trait}\n{e['class']}\np = {e['probability']:.2f}", rotation=0, ha="right",
                              va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
