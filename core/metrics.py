"""The shared task's per-trait scores (SPEC section 2), the one definition every layer uses.

``profiler.evaluation`` scores whole submissions with these; the sample-data generator
(``data_prep.sample``) scores its Bayes rule with them. The definitions are documented
in ``profiler.evaluation``'s docstring.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from core.labels import LABELS

AVERAGES = ("macro", "weighted")
F_MEASURES = ("mean", "pan")
MISSING = -1


def encode(values, trait: str) -> np.ndarray:
    """Class indices of canonical label names; None/NaN (a missing prediction) or an abstention
    ("unknown") -> -1."""
    values = pd.Series(values, dtype=object)
    return pd.Categorical(values.where(values.isin(LABELS[trait])), categories=LABELS[trait]).codes.astype(np.int64)


def trait_scores(y_true: np.ndarray, y_pred: np.ndarray, trait: str, *,
                 average: str = "macro", f_measure: str = "mean") -> dict:
    """F, Acc, P, R, per-class figures and the confusion matrix for one trait.

    ``y_true`` and ``y_pred`` are class indices (``encode``); -1 in ``y_pred`` is a
    missing prediction, counted wrong.
    """
    check_options(average, f_measure)
    names = LABELS[trait]
    all_classes = list(range(len(names)))
    present = sorted(set(np.unique(y_true)) | (set(np.unique(y_pred)) - {MISSING}))
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=present, average=average, zero_division=0)
    if f_measure == "pan":
        f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    cp, cr, cf, support = precision_recall_fscore_support(
        y_true, y_pred, labels=all_classes, average=None, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=all_classes + [MISSING])[:-1]
    per_class = {
        name: {"acc": float(cr[i]), "precision": float(cp[i]), "f1": float(cf[i]),
               "support": int(support[i]), "predicted": int(matrix[:, i].sum())}
        for i, name in enumerate(names)
    }
    return {
        "F": float(f), "Acc": float(accuracy_score(y_true, y_pred)), "P": float(p), "R": float(r),
        "per_class": per_class,
        "confusion": {"labels": list(names), "matrix": matrix[:, :-1].tolist(),
                      "missing": matrix[:, -1].tolist()},
    }


def check_options(average: str, f_measure: str) -> None:
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, not {average!r}")
    if f_measure not in F_MEASURES:
        raise ValueError(f"f_measure must be one of {F_MEASURES}, not {f_measure!r}")
