"""Benchmark ``profiler score``: seconds to read, validate and score 1,000,000 users.

Reproduce with:  .venv/bin/python -m bench.score_speed [--users 1000000] [--out FILE]
Writes a truth file and a 60 %-correct submission under /tmp, then times the library
path the CLI takes (read + validate + score + render) and ``score`` alone.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine
from data_prep.labels import LABELS, TRAITS
from profiler.evaluation import load_submission, load_truth_for_scoring, score
from profiler.reports import render


def write_files(folder: Path, users: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ids = np.char.add("user", np.arange(users).astype(str))
    truth = {t: rng.choice(LABELS[t], users) for t in TRAITS}
    pred = {t: np.where(rng.random(users) < 0.6, truth[t], rng.choice(LABELS[t], users)) for t in TRAITS}
    paths = []
    for name, table in (("truth.txt", truth), ("sub.txt", pred)):
        lines = [":::".join(row) for row in zip(ids, *(table[t] for t in TRAITS))]
        (folder / name).write_text("\n".join(lines) + "\n")
        paths.append(folder / name)
    return paths[0], paths[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="profiler-bench-score-"))
    truth_path, sub_path = write_files(folder, args.users)
    t0 = time.perf_counter()
    truth = load_truth_for_scoring(truth_path)
    t1 = time.perf_counter()
    sub = load_submission(sub_path, truth)
    t2 = time.perf_counter()
    result = score(truth, sub.predictions)
    t3 = time.perf_counter()
    render({"sub": result})
    t4 = time.perf_counter()
    lines = [f"machine: {machine()}", "",
             "| users | read truth s | read + validate submission s | score s | render s | total s |",
             "|---|---|---|---|---|---|",
             f"| {args.users:,} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.2f} | {t4 - t3:.3f} | {t4 - t0:.2f} |"]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("# profiler score: speed\n\nMade by `python -m bench.score_speed "
                            f"--out {args.out}`.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
