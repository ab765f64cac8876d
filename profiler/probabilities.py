"""Scoring probabilities: ``predict``'s JSON, JSON-lines and CSV outputs read as strictly as
label submissions, and the measures a moderator sets thresholds by.

``profiler score`` recognises a probability output by its content: a JSON array or JSON
lines whose traits are objects (``{"label": ..., "probabilities": {class: p}}``), or a CSV
with a ``trait:class`` column per class. Each user's probabilities are checked: every class
of the trait and no other, finite numbers in [0, 1] that sum to 1 (within ``SUM_TOLERANCE``).
A user that ``predict`` could not profile (an ``error`` and no probabilities) counts as
missing. The label each row carries (``unknown`` for an abstention) feeds the paper's label
tables, unchanged; the probabilities feed, per trait:

- **log loss**, **Brier score** and **ECE** (15 bins), as ``profiler.calibration`` defines them;
- **ROC-AUC** and **PR-AUC** (average precision), one class against the rest, per class and
  their macro mean (a class absent from the truth has neither; it is left out of the mean);
- **recall at precision P** per class: the largest share of the class's users found by any
  threshold on the class's probability whose precision is at least P, with that threshold
  (recall 0 and no threshold where none reaches P).

They are computed over the truth users that have probabilities (``n_scored``); users
without count only in the label tables (as wrong).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import DataError, Problem, clip
from core.tables import in_index
from core.labels import ABSTAIN, LABELS, TRAITS, UnknownLabel, normalize_label
from data_prep.truth import read_text
from profiler.evaluation import Submission

#: how far a user's probabilities may sum from 1 (predict writes full float precision)
SUM_TOLERANCE = 1e-3
DEFAULT_PRECISION = 0.9


def sniff(path: str | Path) -> bool:
    """Whether ``path`` looks like a probability output of ``predict`` (False if unreadable:
    the label reader then reports the problem)."""
    try:
        if not Path(path).is_file():  # a device or a pipe is refused by the label reader, unread
            return False
        with open(path, "rb") as handle:
            head = handle.read(1 << 16).decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    text = head.lstrip()
    if text.startswith("["):
        return True
    first = text.split("\n", 1)[0].strip()
    if first.startswith("{"):
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            return False
        return isinstance(record, dict) and any(isinstance(record.get(t), dict) for t in TRAITS)
    header = [c.strip().lower() for c in next(csv.reader([first]), [])]
    return "user_id" in header and any(c.startswith(f"{t}:") for c in header for t in TRAITS)


@dataclass
class ProbabilitySubmission(Submission):
    """A submission with each trait's probabilities: a DataFrame per trait, indexed by user
    id (the truth users that have them), a column per class in vocabulary order."""

    probabilities: dict = field(default_factory=dict)


def load_probabilities(path: str | Path, truth: pd.DataFrame, *, name: str | None = None,
                       ignore_extra: bool = False) -> ProbabilitySubmission:
    """Read and validate a probability output against the truth; every problem is collected
    (file and line), as ``evaluation.load_submission`` does for labels."""
    path = Path(path)
    name = name or path.stem
    problems: list[Problem] = []
    try:
        text = read_text(path)
        records = list(_records(path, text, problems))
    except DataError as exc:
        return ProbabilitySubmission(name, path, _empty_labels(), [Problem(str(path), None, str(exc))])
    labels, probs, seen = [], {t: [] for t in TRAITS}, {}
    for line, record in records:
        row = _check_record(path, line, record, problems)
        if row is None:
            continue
        user = row["user_id"]
        if user in seen:
            problems.append(Problem(str(path), line, f"duplicate user {clip(user)} (first seen on line {seen[user]})"))
            continue
        seen[user] = line
        if user not in truth.index:
            problems.append(Problem(str(path), line, f"user {clip(user)} is not in the truth file"
                                    + ("; ignored" if ignore_extra else " (use --ignore-extra to ignore it)"),
                                    "warning" if ignore_extra else "error"))
            continue
        if row["vectors"] is None:  # not profiled: missing
            continue
        labels.append({"user_id": user, **row["labels"]})
        for t in TRAITS:
            probs[t].append(row["vectors"][t])
    if not records and not problems:
        problems.append(Problem(str(path), None, "file is empty"))
    predictions = pd.DataFrame(labels, columns=["user_id", *TRAITS]).set_index("user_id")
    absent = truth.index[~in_index(truth.index, predictions.index)].tolist()
    if absent and records:
        shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
        problems.append(Problem(str(path), None, f"{len(absent)} of {len(truth)} truth users have no "
                                f"probabilities and count as wrong (and are left out of the probability "
                                f"scores): {shown}", "warning"))
    tables = {t: pd.DataFrame(np.asarray(probs[t], np.float64).reshape(-1, len(LABELS[t])),
                              index=predictions.index, columns=list(LABELS[t])) for t in TRAITS}
    return ProbabilitySubmission(name, path, predictions, problems, tables)


def _empty_labels() -> pd.DataFrame:
    return pd.DataFrame(columns=list(TRAITS), index=pd.Index([], name="user_id"))


def _records(path: Path, text: str, problems: list[Problem]):
    """``(line, record)`` pairs: JSON array elements, JSON lines, or CSV rows (as nested records)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _json_array(path, text)
    elif stripped.startswith("{"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(Problem(str(path), number, f"malformed JSON: {exc.msg}"))
    else:
        yield from _csv_rows(path, text, problems)


def _json_array(path: Path, text: str):
    """The elements of a JSON array with the line each starts on; bad JSON raises ``DataError``."""
    decoder = json.JSONDecoder()
    pos, expect_comma = text.index("[") + 1, False
    line, counted = 1, 0  # the line at offset ``counted`` (counted as we go: linear in the file)

    def line_at(offset: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, offset)
        counted = offset
        return line

    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            raise DataError(f"{path}:{line_at(pos)}: malformed JSON: the array is not closed")
        if text[pos] == "]":
            if text[pos + 1:].strip():
                raise DataError(f"{path}:{line_at(pos)}: malformed JSON: text after the array")
            return
        if expect_comma:
            if text[pos] != ",":
                raise DataError(f"{path}:{line_at(pos)}: malformed JSON: expected ',' or ']'")
            pos, expect_comma = pos + 1, False
            continue
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
        yield line_at(pos), value
        pos, expect_comma = end, True


def _csv_rows(path: Path, text: str, problems: list[Problem]):
    reader = csv.reader(io.StringIO(text))
    header = None
    for number, row in enumerate(reader, 1):
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            lacking = [c for c in ("user_id", *TRAITS) if c not in header]
            if lacking:
                problems.append(Problem(str(path), number, f"CSV header lacks column(s): {', '.join(lacking)}"))
                return
            continue
        if len(row) != len(header):
            problems.append(Problem(str(path), number, f"malformed line: expected {len(header)} "
                                    f"comma-separated fields, found {len(row)}"))
            continue
        cells = dict(zip(header, (c.strip() for c in row)))
        record = {"user_id": cells["user_id"], "error": cells.get("error") or None}
        for t in TRAITS:
            columns = {c.split(":", 1)[1]: v for c, v in cells.items() if c.startswith(f"{t}:")}
            empty = not cells[t] and all(not v or v.lower() == "nan" for v in columns.values())
            record[t] = None if empty else {"label": cells[t], "probabilities": columns}
        yield number, record


def _check_record(path: Path, line: int, record, problems: list[Problem]) -> dict | None:
    """The user id, labels and probability vectors of one record (vectors None for a user not
    profiled); None, with the problem recorded, when the record is bad."""
    def bad(message: str):
        problems.append(Problem(str(path), line, message))

    if not isinstance(record, dict):
        return bad("expected a JSON object per user")
    user = record.get("user_id")
    if not isinstance(user, str) or not user.strip():
        return bad("missing or empty user_id")
    user = user.strip()
    traits = [record.get(t) for t in TRAITS]
    if all(v is None for v in traits):
        return {"user_id": user, "labels": None, "vectors": None}
    out = {"user_id": user, "labels": {}, "vectors": {}}
    for t, entry in zip(TRAITS, traits):
        if not isinstance(entry, dict) or not isinstance(entry.get("probabilities"), dict):
            return bad(f"{t}: expected {{\"label\": ..., \"probabilities\": {{class: p, ...}}}}, "
                       f"found {clip(entry)}")
        vector = _vector(t, entry["probabilities"])
        if isinstance(vector, str):
            return bad(f"{t}: {vector}")
        label = entry.get("label")
        if label is None or label == "":
            label = LABELS[t][int(np.argmax(vector))]
        elif isinstance(label, str) and label.strip().lower() == ABSTAIN:
            label = ABSTAIN
        else:
            try:
                label = normalize_label(t, str(label))
            except UnknownLabel as exc:
                return bad(str(exc))
        out["labels"][t] = label
        out["vectors"][t] = vector
    return out


def _vector(trait: str, given: dict) -> np.ndarray | str:
    """The class probabilities in vocabulary order, or what is wrong with them."""
    values = {}
    for key, value in given.items():
        try:
            name = normalize_label(trait, str(key))
        except UnknownLabel:
            return f"unknown class {clip(key)} (expected {', '.join(LABELS[trait])})"
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"the probability of {name} is not a number: {clip(value)}"
        if not math.isfinite(number) or not 0 <= number <= 1:
            return f"the probability of {name} is {clip(value)}, not a number in [0, 1]"
        values[name] = number
    lacking = [c for c in LABELS[trait] if c not in values]
    if lacking:
        return f"no probability for {', '.join(lacking)}"
    vector = np.array([values[c] for c in LABELS[trait]])
    if abs(vector.sum() - 1) > SUM_TOLERANCE:
        return f"the probabilities sum to {vector.sum():.6g}, not 1"
    return vector


# --- measures ------------------------------------------------------------------------------


def recall_at_precision(positive: np.ndarray, scores: np.ndarray, precision: float) -> tuple[float, float | None]:
    """The best recall of ``positive`` among thresholds on ``scores`` with precision at least
    ``precision``, and the lowest such threshold; ``(0.0, None)`` where none reaches it."""
    from sklearn.metrics import precision_recall_curve

    if not positive.any():
        return 0.0, None
    reached, recall, cuts = precision_recall_curve(positive, scores)
    ok = np.flatnonzero(reached[:-1] >= precision)  # the last point has no threshold
    if not len(ok):
        return 0.0, None
    best = ok[np.argmax(recall[ok])]
    return float(recall[best]), float(cuts[best])


def trait_probability_scores(probs: np.ndarray, y: np.ndarray, classes, *, precision: float) -> dict:
    """Every probability measure of one trait (``probs``: users x classes; ``y``: class indices)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from profiler.calibration import calibration_scores

    out = {"n_scored": int(len(y)), "at_precision": precision, "per_class": {}}
    if not len(y):
        return out | {"log_loss": None, "brier": None, "ece": None, "roc_auc": None, "pr_auc": None}
    out |= calibration_scores(probs, y)
    for k, name in enumerate(classes):
        positive = y == k
        both = positive.any() and not positive.all()
        recall, threshold = recall_at_precision(positive, probs[:, k], precision)
        out["per_class"][name] = {
            "support": int(positive.sum()),
            "roc_auc": float(roc_auc_score(positive, probs[:, k])) if both else None,
            "pr_auc": float(average_precision_score(positive, probs[:, k])) if positive.any() else None,
            "recall_at_precision": recall, "threshold": threshold}
    for measure in ("roc_auc", "pr_auc"):
        values = [v[measure] for v in out["per_class"].values() if v[measure] is not None]
        out[measure] = float(np.mean(values)) if values else None
    return out


def probability_scores(truth: pd.DataFrame, probabilities: dict, *, precision: float = DEFAULT_PRECISION) -> dict:
    """Per trait, the measures above over the truth users in ``probabilities`` (a DataFrame per
    trait indexed by user id, a column per class in vocabulary order)."""
    from core.metrics import encode

    if not 0 < precision < 1:
        raise ValueError(f"precision must be in (0, 1), not {precision}")
    out = {}
    for t in TRAITS:
        table = probabilities[t]
        users = table.index[in_index(table.index, truth.index)]
        y = encode(truth.loc[users, t], t)
        out[t] = trait_probability_scores(table.loc[users].to_numpy(np.float64), y, LABELS[t], precision=precision)
    return out
