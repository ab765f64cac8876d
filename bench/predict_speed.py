"""Benchmark ``profiler predict``: single-user latency and users per second.

Reproduce with:
  .venv/bin/python -m bench.predict_speed --model runs/demo/model1/model.keras \
      --data data/sample [--out results/bench_predict.md]

Figures: latency to profile one folder of 11 images with the model already loaded
(median of 20), the whole ``profiler predict`` command for that folder including Python
and TensorFlow start-up (median of 3), and users per second over every user of the
sample data's train and test splits (1,000 users at the defaults).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("data/sample"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from data_prep.cache import default_workers
    from data_prep.dataset import discover_users
    from profiler.prediction import Predictor, iter_predictions

    predictor = Predictor.load(args.model)
    users = discover_users([args.data / "train", args.data / "test"])
    one = next(u for u in users if len(u.files) == 11)
    list(iter_predictions([one], predictor))  # warm-up (graph tracing)
    latencies = []
    for _ in range(20):
        start = time.perf_counter()
        list(iter_predictions([one], predictor))
        latencies.append(time.perf_counter() - start)
    commands = []
    exe = Path(sys.executable).parent / "profiler"
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([str(exe), "predict", str(one.files[0].parent), "--model", str(args.model), "-q"],
                       check=True, capture_output=True)
        commands.append(time.perf_counter() - start)
    start = time.perf_counter()
    n = sum(len(rows) for rows in iter_predictions(users, predictor, workers=default_workers()))
    throughput = n / (time.perf_counter() - start)
    lines = [f"machine: {machine()}", f"model: {args.model} ({predictor.info['variant']}, "
             f"{predictor.info['height']} px)", "",
             "| figure | value |", "|---|---|",
             f"| one user (11 images), model loaded: median of 20 | {statistics.median(latencies) * 1000:.0f} ms |",
             f"| whole `profiler predict` command for one user: median of 3 | {statistics.median(commands):.1f} s |",
             f"| users per second over {n} users (decode + predict) | {throughput:.1f} |"]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("# profiler predict: speed\n\nMade by `python -m bench.predict_speed "
                            f"--model {args.model} --data {args.data} --out {args.out}`.\n\n"
                            + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
