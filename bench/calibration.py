"""How calibrated the set model's probabilities are, before and after temperature scaling.

Reproduce with:
  .venv/bin/python -m bench.calibration DATASET... [--store FILE] [--out results/calibration.md]

For each DATASET (a sample dataset with train/ and test/, e.g. made by ``profiler
sample-data DIR --users 5000 --seed 0``, the MEX-A3T size), the set model is trained
with the ``default`` preset (its temperatures fitted on the validation split as
training ends), the test split predicted, and per trait the log loss, Brier score and
expected calibration error (15 bins) reported for the raw softmax and with the
temperatures, with a reliability diagram per dataset beside the report.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from bench.common import machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--store", type=Path, default=Path("runs/bench/embeddings.sqlite"))
    parser.add_argument("--work", type=Path, default=Path("runs/bench/calibration"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from data_prep.dataset import load_dataset
    from profiler.config import resolve
    from profiler.embeddings import EmbeddedData, EmbeddingStore
    from profiler.evaluation import load_truth_for_scoring
    from profiler.runs import calibration_report, calibration_table, predict_dataset, write_calibration
    from profiler.training import train

    reports, validation = {}, {}
    for data in args.datasets:
        print(f"{data}: training and predicting the set model", file=sys.stderr, flush=True)
        config = resolve("default", overrides={"model": "set", "seed": args.seed})
        with EmbeddingStore(args.store) as store:
            embedded = EmbeddedData.for_training(load_dataset(data / "train"), config, store)
        run = args.work / f"{data.name}-{args.seed}"
        shutil.rmtree(run, ignore_errors=True)
        summary = train(embedded, run, config, progress=False)
        with EmbeddingStore(args.store) as store:
            table = predict_dataset(run / "model.keras", data / "test", progress=False, store=store)
        name = f"{data} (seed {args.seed})"
        reports[name] = calibration_report(load_truth_for_scoring(data / "test"), table)
        validation[name] = summary["calibration"]
    info = machine()
    text = "\n".join([
        "# Calibration of the set model (`bench/calibration.py`)", "",
        f"Machine: {info['cpu']} ({info['features']}), {info['cores']} cores. The set model with the "
        "`default` preset; each head's temperature T fitted on the validation split when training "
        "ended, after its outputs were shifted back to the training users' class shares (it is "
        "trained with balanced class weights). Test split: log loss, Brier score and expected "
        "calibration error (15 equal-width bins of the top-label confidence), raw softmax -> as "
        "`predict` outputs them (shifted, with the temperature).", "",
        calibration_table(reports), ""]) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        (args.out.parent / args.out.stem).mkdir(parents=True, exist_ok=True)
        write_calibration(reports, args.out.parent / args.out.stem)
        (args.out.parent / args.out.stem / "validation.json").write_text(json.dumps(validation, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
