"""Rendering scores as the paper's tables: Markdown, CSV, JSON or LaTeX.

``build_tables`` turns score results (``profiler.evaluation.score``) into DataFrames,
one per paper table; ``render`` turns those into text. Rows quoted from the paper are
marked in the ``source`` column.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from tabulate import tabulate

from core.labels import LABELS, TRAITS
from profiler import paper

FORMATS = ("markdown", "csv", "json", "latex")
OURS = "this run"
METRICS = ("F", "Acc", "P", "R")
SUMMARY_TITLES = {"gender": "Table 1. Gender", "location": "Table 2. Location",
                  "occupation": "Table 4. Occupation"}
PER_CLASS_TITLES = {"location": "Table 3. Location: accuracy per class",
                    "occupation": "Table 5. Occupation: accuracy per class"}


def summary_frame(results: dict[str, dict], trait: str, *, with_paper: bool = False) -> pd.DataFrame:
    """F, Acc, P, R of each scored system (and the paper's rows) for one trait."""
    rows = []
    for name, result in results.items():
        scores = result["traits"][trait]
        row = {"system": name, "source": result.get("source", OURS),
               **{m: scores[m] for m in METRICS}}
        for metric, (low, high) in scores.get("ci95", {}).items():
            if metric in ("F", "Acc"):
                row[f"{metric} 95% CI"] = f"{low:.4f}-{high:.4f}"
        rows.append(row)
    if with_paper:
        rows += [{"system": system, "source": paper.SOURCE, **dict(zip(METRICS, values))}
                 for system, values in paper.SUMMARY[trait]]
    return pd.DataFrame(rows)


def per_class_frame(results: dict[str, dict], trait: str, *, with_paper: bool = False) -> pd.DataFrame:
    """Accuracy per class (recall) of each system for one trait, paper rows optional."""
    rows = [{"system": name, "source": result.get("source", OURS),
             **{c: v["acc"] for c, v in result["traits"][trait]["per_class"].items()}}
            for name, result in results.items()]
    if with_paper and trait in paper.PER_CLASS:
        rows += [{"system": system, "source": paper.SOURCE, **values}
                 for system, values in paper.PER_CLASS[trait]]
    return pd.DataFrame(rows, columns=["system", "source", *LABELS[trait]])


def build_tables(results: dict[str, dict], *, with_paper: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """The paper's Tables 1-5 for these results, in the paper's order."""
    tables = []
    for trait in TRAITS if any("traits" in r for r in results.values()) else ():
        tables.append((SUMMARY_TITLES[trait], summary_frame(results, trait, with_paper=with_paper)))
        if trait in PER_CLASS_TITLES:
            tables.append((PER_CLASS_TITLES[trait], per_class_frame(results, trait, with_paper=with_paper)))
    scored = {name: result["probabilities"] for name, result in results.items() if "probabilities" in result}
    if scored:  # (after the paper's tables, which need "traits": none when only probabilities are given)
        for trait in TRAITS:
            tables.append((f"Probabilities. {trait.capitalize()}", probability_frame(scored, trait)))
            precision = next(iter(scored.values()))[trait]["at_precision"]
            tables.append((f"Probabilities. {trait.capitalize()}: per class, one against the rest "
                           f"(recall at precision {precision:g})", probability_class_frame(scored, trait)))
    return tables


def probability_tables(scored: dict[str, dict]) -> str:
    """Markdown: the probability tables of ``build_tables`` alone (``scored``: system -> the
    ``probabilities.probability_scores`` of its predictions)."""
    tables = build_tables({name: {"probabilities": p} for name, p in scored.items()})
    return "\n".join(f"### {title}\n\n" + tabulate(_cells(frame), headers="keys", tablefmt="github",
                                                     floatfmt=".3f", showindex=False, missingval="") + "\n"
                     for title, frame in tables)


PROBABILITY_MEASURES = {"n_scored": "users", "log_loss": "log loss", "brier": "Brier", "ece": "ECE",
                        "roc_auc": "ROC-AUC (macro)", "pr_auc": "PR-AUC (macro)"}
CLASS_MEASURES = {"support": "support", "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC",
                  "recall_at_precision": "recall at P", "threshold": "threshold"}


def probability_frame(scored: dict[str, dict], trait: str) -> pd.DataFrame:
    """Log loss, Brier, ECE, macro ROC-AUC and PR-AUC of each probability submission."""
    return pd.DataFrame([{"system": name, **{title: scores[trait][key] for key, title in PROBABILITY_MEASURES.items()}}
                         for name, scores in scored.items()])


def probability_class_frame(scored: dict[str, dict], trait: str) -> pd.DataFrame:
    """Per class: ROC-AUC, PR-AUC, recall at precision P and its threshold."""
    return pd.DataFrame([{"system": name, "class": cls, **{title: values[key] for key, title in CLASS_MEASURES.items()}}
                         for name, scores in scored.items() for cls, values in scores[trait]["per_class"].items()],
                        columns=["system", "class", *CLASS_MEASURES.values()])


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)


def render(results: dict[str, dict], *, fmt: str = "markdown", with_paper: bool = False) -> str:
    """The tables as text in ``fmt``; JSON carries the full results instead."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    if fmt == "json":
        payload = {"results": results}
        if with_paper:
            payload["paper"] = {"source": paper.SOURCE, "summary": paper.SUMMARY,
                                "per_class": paper.PER_CLASS}
        return json.dumps(payload, indent=2, default=_jsonable) + "\n"
    tables = build_tables(results, with_paper=with_paper)
    if fmt == "csv":
        frames = [frame.assign(table=title)[["table", *frame.columns]] for title, frame in tables]
        return pd.concat(frames, ignore_index=True).to_csv(index=False, float_format="%.4f")
    parts = []
    for title, frame in tables:
        if fmt == "markdown":
            body = tabulate(_cells(frame), headers="keys", tablefmt="github", floatfmt=".4f",
                            showindex=False, missingval="")
            parts.append(f"### {title}\n\n{body}\n")
        else:
            body = tabulate(_cells(frame), headers="keys", tablefmt="latex_booktabs",
                            floatfmt=".4f", showindex=False, missingval="")
            parts.append(f"% {title}\n{body}\n")
    return "\n".join(parts)


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
