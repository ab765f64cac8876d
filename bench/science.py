"""Where the set model stands between what its features allow and what the images allow.

Reproduce with (the sample datasets first, e.g. at the MEX-A3T size):
  profiler sample-data data/m0 --users 5000 --seed 0
  .venv/bin/python -m bench.science data/m0 data/m1 [--poolings mean,latent:latent_reader_l2=null,latent] [--out results/science.md]
  (--update: rerun some poolings and keep the other rows of the datasets already in --out)

For each sample dataset: the Bayes rule (the ceiling), the instance-probe reference (the
features' limit: a linear probe from each image's embedding to its answer-key group,
combined per user by Bayes' rule), the item oracle (perfect item identity, learnt from
the training users) and the set model trained through ``profiler.training.train`` with
the ``default`` preset and each ``--poolings`` choice, all scored on the test split
with 95 % bootstrap intervals (1,000 resamples), macro-F and accuracy per trait, and
each F as a fraction of the Bayes rule's and of the probe's. Tuning happens on the
training split's validation share only; the test split is scored once per model.
Embeddings go through the cache ``--embeddings`` (default ``runs/bench/embeddings.sqlite``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import machine

def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def evaluate(data: Path, poolings: list[str], store_path: Path, work: Path, encoder_name: str | None = None,
             encoder=None) -> dict:
    """The references and the set model with each of ``poolings`` on ``data``'s test users;
    ``encoder`` (an encoder object) is used instead of the one named where given."""
    from data_prep.dataset import load_dataset
    from core.labels import TRAITS
    from data_prep.sample.oracle import oracle_submission
    from data_prep.sample.probe import probe_submission
    from data_prep.truth import read_truth
    from profiler import evaluation
    from profiler.config import resolve
    from profiler.embeddings import EmbeddedData, EmbeddingStore
    from profiler.encoders import get_encoder
    from profiler.prediction import flatten, iter_predictions, Predictor
    from profiler.training import train

    base = resolve("default", overrides={"model": "set", **({"encoder": encoder_name} if encoder_name else {})})
    encoder = encoder or get_encoder(base.encoder)
    t = time.perf_counter()
    datasets = {split: load_dataset(data / split) for split in ("train", "test")}
    with EmbeddingStore(store_path) as store:
        embedded = {split: EmbeddedData.for_training(dataset, base, store, encoder=encoder, progress=True)
                    for split, dataset in datasets.items()}
    timings = {"embed_s": time.perf_counter() - t}
    truth = evaluation.load_truth_for_scoring(data / "test")
    predictions = {"Bayes rule (ceiling)": read_truth(data / "bayes_rule_test.txt")}
    t = time.perf_counter()
    predictions["Instance-probe reference"] = read_truth(
        probe_submission(data, embedded["train"], embedded["test"], work / "probe.txt"))
    timings["probe_s"] = time.perf_counter() - t
    predictions["Item oracle + logistic regression"] = read_truth(oracle_submission(data, work / "oracle.txt"))
    decided = {}  # each set model's decision rule (its default)
    for k, choice in enumerate(poolings):
        pooling, settings = variant(choice)
        config = dataclasses.replace(base, set_pooling=pooling, **settings)
        t = time.perf_counter()
        summary = train(embedded["train"], work / f"m{k}", config, progress=False)
        timings[f"train_{choice}_s"] = time.perf_counter() - t
        with EmbeddingStore(store_path) as store:
            predictor = Predictor.load(work / f"m{k}" / "model.keras", encoder=encoder, store=store)
            rows = [r for batch in iter_predictions(datasets["test"].users, predictor) for r in batch]
        table = flatten(rows, predictor.info["labels"]).set_index("user_id")[list(TRAITS)]
        extra = "".join(f", {pair}" for pair in choice.split(":")[1:])
        predictions[f"Set model ({pooling} pooling{extra})"] = table
        decided[f"Set model ({pooling} pooling{extra})"] = predictor.decider.text
        _log(f"  {choice}: {summary['epochs_run']} epochs, best {summary['best_epoch']}")
    scores = {name: evaluation.score(truth, p, bootstrap=1000, seed=0) for name, p in predictions.items()}
    meta = json.loads((data / "generator.json").read_text())
    m = machine()
    return {"data": str(data), "machine": f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('features')}",
            "seed": meta["seed"], "users": meta["users"],
            "signal": meta["process"]["signal"], "majority_accuracy": meta["majority_accuracy"],
            "images": {s: int(len(e.vectors)) for s, e in embedded.items()}, "encoder": encoder.identity,
            "timings": timings, "scores": scores, "decide": decided}


def variant(choice: str) -> tuple[str, dict]:
    """``POOLING[:KEY=VALUE...]`` (a pooling and settings of it) as the pooling and the settings."""
    from profiler.config import apply_overrides

    pooling, *pairs = choice.split(":")
    settings = dict(pair.split("=", 1) for pair in pairs)
    return pooling, apply_overrides({}, settings, source=f"--poolings {choice}")


def merged(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` runs with ``new`` ones laid over them: per dataset, the new run's rows replace
    rows of the same name and are added after the rest; the new timings join the old;
    datasets only in one of them are kept as they are, in ``old``'s order then ``new``'s.
    A dataset embedded by another encoder is another run: its rows are never mixed.
    Rows kept from ``old`` are listed with the machine they were measured on (``kept``)."""
    def key(run: dict) -> tuple[str, str]:
        return run["data"], run["encoder"].split(":", 1)[0]

    fresh = {key(run): run for run in new}
    out = []
    for run in old:
        if key(run) in fresh:
            update = fresh.pop(key(run))
            scores = {**run["scores"], **update["scores"]}
            order = [n for n in run["scores"]] + [n for n in update["scores"] if n not in run["scores"]]
            where = run.get("machine", "an earlier run's machine")
            kept = {n: run.get("kept", {}).get(n, where) for n in run["scores"] if n not in update["scores"]}
            rules = {**rules_of(run), **rules_of(update)}
            run = {**update, "scores": {n: scores[n] for n in order},
                   "timings": {**run["timings"], **update["timings"]}, "kept": kept,
                   "decide": {n: rules[n] for n in order if n in rules}}
        out.append(run)
    return out + list(fresh.values())


def rules_of(run: dict) -> dict[str, str]:
    """Each set model row's decision rule; ``balanced`` for runs recorded before the rule was
    (it was the default until ``macro`` replaced it)."""
    recorded = run.get("decide", {})
    return {n: recorded.get(n, "balanced") for n in run["scores"] if n.startswith("Set model")}


def render(runs: list[dict]) -> str:
    from tabulate import tabulate

    from core.labels import TRAITS

    parts = ["# The set model against the references (`bench/science.py`)", ""]
    for run in runs:
        s = run["scores"]
        ceiling = s["Bayes rule (ceiling)"]["traits"]
        probe = s["Instance-probe reference"]["traits"]
        rows = []
        for name, result in s.items():
            row = {"system": name}
            for t in TRAITS:
                r = result["traits"][t]
                lo, hi = r["ci95"]["F"]
                row[f"{t} F [95% CI]"] = f"{r['F']:.3f} [{lo:.3f}, {hi:.3f}]"
                row[f"{t} Acc"] = f"{r['Acc']:.3f}"
                row[f"{t} % ceiling / % probe"] = (f"{100 * r['F'] / ceiling[t]['F']:.0f} / "
                                                   f"{100 * r['F'] / probe[t]['F']:.0f}")
            rows.append(row)
        parts += [f"## {run['data']} ({run['encoder'].split(':', 1)[0]}): seed {run['seed']}, signal {run['signal']}, "
                  f"{run['users']['train']} train / {run['users']['test']} test users "
                  f"({run['images']['train']} / {run['images']['test']} images)", "",
                  f"Encoder {run['encoder']}. Majority-class accuracy: "
                  + ", ".join(f"{t} {v:.2f}" for t, v in run["majority_accuracy"].items())
                  + ". Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in run["timings"].items()) + ".", "",
                  *([f"Measured on {run['machine']}"
                     + "".join(f"; the row {n!r} earlier, on {w}" for n, w in run.get("kept", {}).items())
                     + ".", ""] if "machine" in run else []),
                  "Labels of the set models by the decision rule " + "; ".join(
                      f"{rule!r}: {', '.join(repr(n) for n, r in rules_of(run).items() if r == rule)}"
                      for rule in dict.fromkeys(rules_of(run).values())) + ".", "",
                  tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github", showindex=False), ""]
    m = machine()
    parts.append(f"Machine: {m.get('cpu')}, {m.get('cores')} cores, features: {m.get('features')}.")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", type=Path, help="sample dataset folders")
    parser.add_argument("--poolings", default="mean,evidence,neighbours,latent:latent_reader_l2=null,latent",
                        help="comma-separated poolings, each with optional :KEY=VALUE settings")
    parser.add_argument("--encoder", default=None,
                        help="the set model's encoder (default: the default preset's); also the probe's")
    parser.add_argument("--embeddings", type=Path, default=Path("runs/bench/embeddings.sqlite"))
    parser.add_argument("--out", type=Path, default=Path("results/science.md"))
    parser.add_argument("--update", action="store_true",
                        help="keep the other rows of the datasets already in --out's .json and replace "
                             "(or add) only these poolings' rows and the references")
    args = parser.parse_args()
    from core.io import atomic_write_text

    runs = []
    for data in args.data:
        _log(f"{data}:")
        with tempfile.TemporaryDirectory() as work:
            runs.append(evaluate(data, args.poolings.split(","), args.embeddings, Path(work), args.encoder))
    if args.update and args.out.with_suffix(".json").is_file():
        runs = merged(json.loads(args.out.with_suffix(".json").read_text()), runs)
    text = render(runs)
    atomic_write_text(args.out, text)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(runs, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
