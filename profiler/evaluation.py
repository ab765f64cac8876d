"""Scoring submissions against a truth file, the way the MEX-A3T tables report them.

Per trait: F, Acc, P, R. Definitions (SPEC section 2):

- **Acc** is plain accuracy over every truth user; a user missing from the submission
  counts as wrong.
- **P** and **R** are averaged over the classes that occur in the truth or in the
  predictions (scikit-learn's default label set; a class in neither is left out):
  ``average="macro"`` (the default) takes their plain mean, ``"weighted"`` weights each
  class by its number of truth users. Weighted R therefore always equals Acc, which is
  what the paper's gender rows show; its location rows are macro.
- **F** is by default the (macro or weighted) mean of the per-class F1 values, which is
  what the paper's location rows show; ``f_measure="pan"`` gives instead the harmonic
  mean of the averaged P and R, as PAN's evaluators compute it.
- **Zero division**: a class never predicted has precision 0; a class absent from the
  truth has recall 0; a class with neither has F1 0 (``zero_division=0`` throughout).
- Per class: accuracy (the share of the class's users predicted correctly, i.e. its
  recall, as in the paper's Tables 3 and 5), precision, F1, support, and the number of
  users predicted as the class.

Everything here returns plain data (dicts of floats and lists); rendering is in
``profiler.reports``. No Keras import.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from core.errors import DataError, Problem, clip
from core.labels import ABSTAIN, LABELS, TRAITS
from core.metrics import AVERAGES, F_MEASURES, MISSING, check_options, encode, trait_scores  # noqa: F401
from core.tables import in_index
from data_prep.truth import read_label_file, read_text

def bootstrap_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, *, rounds: int,
                     seed: int = 0, average: str = "macro", f_measure: str = "mean",
                     chunk: int = 100) -> dict[str, np.ndarray]:
    """F, Acc, P, R over ``rounds`` resamples of the users (with replacement), seeded.

    Computed from confusion counts in NumPy (the same definitions as ``trait_scores``;
    the tests check both agree), since calling scikit-learn per resample is slow.
    """
    check_options(average, f_measure)
    rng = np.random.default_rng(seed)
    n = len(y_true)
    k = n_classes + 1  # last column: missing predictions
    cells = y_true * k + np.where(y_pred == MISSING, n_classes, y_pred)
    out = {m: [] for m in ("F", "Acc", "P", "R")}
    for start in range(0, rounds, chunk):
        b = min(chunk, rounds - start)
        idx = rng.integers(0, n, size=(b, n))
        counts = np.zeros((b, n_classes * k), np.int64)
        np.add.at(counts, (np.repeat(np.arange(b), n), cells[idx].ravel()), 1)
        cm = counts.reshape(b, n_classes, k)
        for metric, values in _metrics_from_counts(cm, n_classes, average, f_measure).items():
            out[metric].append(values)
    return {m: np.concatenate(v) for m, v in out.items()}


def _metrics_from_counts(cm: np.ndarray, n_classes: int, average: str, f_measure: str) -> dict:
    """F, Acc, P, R from a stack of confusion matrices (b, classes, classes + missing)."""
    tp = np.diagonal(cm[:, :, :n_classes], axis1=1, axis2=2).astype(float)
    support = cm.sum(axis=2).astype(float)
    predicted = cm[:, :, :n_classes].sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    if average == "macro":
        weights = ((support + predicted) > 0).astype(float)
    else:
        weights = support
    total = weights.sum(axis=1)
    avg = {name: (values * weights).sum(axis=1) / np.where(total > 0, total, 1)
           for name, values in (("P", precision), ("R", recall), ("F", f1))}
    if f_measure == "pan":
        p, r = avg["P"], avg["R"]
        avg["F"] = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
    avg["Acc"] = tp.sum(axis=1) / cm.sum(axis=(1, 2))
    return avg


def score(truth: pd.DataFrame, predictions: pd.DataFrame, *, average: str = "macro",
          f_measure: str = "mean", bootstrap: int = 0, seed: int = 0) -> dict:
    """Score ``predictions`` against ``truth`` (both indexed by user id, a column per trait).

    Users in the truth but not in the predictions count as wrong; users only in the
    predictions are ignored (validation decides whether they are an error). An abstention
    (``unknown``) counts as wrong too, and apart: ``abstained`` and ``coverage`` (the share
    decided), and ``accuracy_decided`` (the accuracy among the users decided). With
    ``bootstrap`` > 0, each trait gets 95 % intervals over that many resamples.
    """
    check_options(average, f_measure)
    aligned = predictions.reindex(truth.index)
    missing = aligned.index[aligned[list(TRAITS)].isna().all(axis=1)].tolist()
    result = {"n_users": int(len(truth)), "n_missing": len(missing), "missing_users": missing,
              "average": average, "f_measure": f_measure, "traits": {}}
    for trait in TRAITS:
        y_true = encode(truth[trait], trait)
        y_pred = encode(aligned[trait], trait)
        scores = trait_scores(y_true, y_pred, trait, average=average, f_measure=f_measure)
        abstained = (aligned[trait] == ABSTAIN).to_numpy()
        decided = ~abstained & (y_pred >= 0)
        scores |= {"abstained": int(abstained.sum()), "coverage": float(decided.mean()) if len(decided) else 0.0,
                   "accuracy_decided": float((y_pred[decided] == y_true[decided]).mean()) if decided.any() else None}
        if bootstrap:
            samples = bootstrap_scores(y_true, y_pred, len(LABELS[trait]), rounds=bootstrap,
                                       seed=seed, average=average, f_measure=f_measure)
            scores["ci95"] = {m: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
                              for m, v in samples.items()}
        result["traits"][trait] = scores
    return result


# --- submissions -----------------------------------------------------------------------


@dataclass
class Submission:
    """A parsed submission: its name, its predictions and what validation found."""

    name: str
    path: Path | None
    predictions: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def load_submission(path: str | Path, truth: pd.DataFrame, *, name: str | None = None,
                    fmt: str = "auto", ignore_extra: bool = False) -> Submission:
    """Read and validate a submission against the truth; every problem is collected.

    Errors: an unreadable or empty file, malformed lines, unknown labels, duplicate
    users, and users not in the truth (a warning instead with ``ignore_extra``).
    Warnings: truth users missing from the submission (they count as wrong).
    """
    path = Path(path)
    name = name or path.stem
    try:
        parsed = read_label_file(path, fmt=fmt, abstain=True)
    except DataError as exc:  # keep the line the reader named, if any
        import re

        found = re.match(rf"{re.escape(str(path))}(?::(\d+))?: (.*)", str(exc), re.S)
        line = int(found.group(1)) if found and found.group(1) else None
        return Submission(name, path, _empty(), [Problem(str(path), line, found.group(2) if found else str(exc))])
    problems = [Problem(p.path, p.line, p.message, "error") for p in parsed.problems]
    table = parsed.table
    extra = table[~in_index(table["user_id"], truth.index)]
    for row in extra.itertuples():
        problems.append(Problem(str(path), int(row.line),
                                f"user {clip(row.user_id)} is not in the truth file"
                                + ("; ignored" if ignore_extra else " (use --ignore-extra to ignore it)"),
                                "warning" if ignore_extra else "error"))
    predictions = table[in_index(table["user_id"], truth.index)].set_index("user_id")[list(TRAITS)]
    absent = truth.index[~in_index(truth.index, predictions.index)].tolist()
    if absent and not parsed.table.empty:
        shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
        problems.append(Problem(str(path), None, f"{len(absent)} of {len(truth)} truth users have "
                                f"no prediction and count as wrong: {shown}", "warning"))
    return Submission(name, path, predictions, problems)


def predictions_of(table: pd.DataFrame) -> pd.DataFrame:
    """A prediction table (``prediction.flatten``) as ``score`` reads predictions: the users
    profiled, indexed by user id, a column per trait. Users not profiled count as wrong."""
    profiled = table[table["error"].isna()] if "error" in table else table
    return profiled.set_index("user_id")[list(TRAITS)]


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=list(TRAITS), index=pd.Index([], name="user_id"))


def load_truth_for_scoring(path: str | Path) -> pd.DataFrame:
    """The truth table from a truth file, or from a dataset folder that holds one."""
    from data_prep.dataset import find_truth
    from data_prep.truth import read_truth

    path = Path(path)
    if path.is_dir():
        found = find_truth(path)
        if found is None:
            raise DataError(f"{path}: no truth.txt, truth.csv or truth.jsonl in this folder")
        path = found
    read_text(path)  # clear error for unreadable or non-UTF-8 files
    return read_truth(path)


# --- baselines ---------------------------------------------------------------------------


BASELINE_SOURCE = "baseline from the truth"


def baselines(truth: pd.DataFrame, *, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The majority-class and stratified-random baselines, by row name."""
    return {"majority class": majority_baseline(truth),
            "stratified random": stratified_baseline(truth, seed=seed)}


def score_baselines(truth: pd.DataFrame, *, seed: int = 0, **options) -> dict[str, dict]:
    """Score both baselines against the truth (``options`` as for ``score``), marked as baselines."""
    results = {}
    for name, preds in baselines(truth, seed=seed).items():
        results[name] = score(truth, preds, seed=seed, **options)
        results[name]["source"] = BASELINE_SOURCE
    return results


def majority_baseline(truth: pd.DataFrame) -> pd.DataFrame:
    """Every user gets each trait's most frequent truth class (ties: vocabulary order)."""
    out = pd.DataFrame(index=truth.index)
    for trait in TRAITS:
        counts = truth[trait].value_counts()
        best = max(LABELS[trait], key=lambda c: (counts.get(c, 0), -LABELS[trait].index(c)))
        out[trait] = best
    return out


def stratified_baseline(truth: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Each user's traits drawn at random from the truth's class frequencies (seeded)."""
    rng = np.random.default_rng(seed)
    out = pd.DataFrame(index=truth.index)
    for trait in TRAITS:
        freq = truth[trait].value_counts(normalize=True)
        out[trait] = rng.choice(freq.index.to_numpy(), size=len(truth), p=freq.to_numpy())
    return out
