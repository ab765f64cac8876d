"""Benchmark ``profiler score``: seconds to read, validate and score 1,000,000 users.

Reproduce with:  .venv/bin/python -m bench.score_speed [--json out.json] [--quick]
Writes a truth file and a 60 %-correct submission under /tmp, then times the library
path the CLI takes (read, validate, score and render), median of 3.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import figure, stage_main
from core.labels import LABELS, TRAITS
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


def run(quick: bool = False) -> list[dict]:
    users, runs = (20_000, 2) if quick else (1_000_000, 3)
    folder = Path(tempfile.mkdtemp(prefix="profiler-bench-score-"))
    truth_path, sub_path = write_files(folder, users)
    parts = {"read truth": [], "read + validate submission": [], "score": [], "total": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        truth = load_truth_for_scoring(truth_path)
        t1 = time.perf_counter()
        sub = load_submission(sub_path, truth)
        t2 = time.perf_counter()
        result = score(truth, sub.predictions)
        render({"sub": result})
        t3 = time.perf_counter()
        for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            parts[key].append(value)
    return [figure("score", f"{users:,} users: {key}", values, "s") for key, values in parts.items()]


if __name__ == "__main__":
    stage_main(run, __doc__)
