"""Profiling new users end to end: the set model with each encoder runtime, side by side.

Reproduce with:
  .venv/bin/python -m bench.new_users [DATASET] [--users 300] [--rounds 2]

``profiler.runs.predict_dataset`` over the first ``--users`` users of DATASET (default
data/sample/test) with an empty embedding cache each time, so every image is decoded,
preprocessed and embedded: what a new batch of users costs. The model is loaded first
(not timed; the LiteRT encoder converted once beforehand). Each runtime's head is an
untrained set model over that encoder's embeddings (the encoder dominates the cost;
the head's weights do not change it). Rounds alternate between the runtimes, so both
see the same machine.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine, new_users_args, plain_set_head, warm

RUNTIMES = {"keras (before)": "efficientnet_lite0", "litert int8": "efficientnet_lite0_int8",
            "litert float32": "efficientnet_lite0_float32"}


def measure(users: list, rounds: int, runtimes: dict[str, str] = RUNTIMES) -> dict[str, list[float]]:
    """Seconds to profile ``users`` with an empty embedding cache, per runtime, over ``rounds`` rounds."""
    from profiler.encoders import get_encoder
    from profiler.models.io import save_model
    from profiler.prediction import Predictor

    work = Path(tempfile.mkdtemp(prefix="bench-new-users-"))
    try:
        predictors = {}
        for label, name in runtimes.items():
            encoder = get_encoder(name)
            warm(encoder)
            path = save_model(plain_set_head(encoder), work / f"{name}.keras")
            predictors[label] = Predictor.load(path, encoder=encoder, store=work / "unused.sqlite")
        seconds = alternate(predictors, users, rounds, work)
        for predictor in predictors.values():
            predictor.reader.store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return seconds


def alternate(predictors: dict, users: list, rounds: int, work: Path) -> dict[str, list[float]]:
    """Seconds each of ``predictors`` (set models, by label) takes to profile ``users`` with an
    empty embedding cache (a fresh one under ``work`` each time), rounds alternating between
    them so that all see the same machine."""
    from profiler.embeddings import EmbeddingStore
    from profiler.prediction import iter_predictions

    seconds = {label: [] for label in predictors}
    for r in range(rounds):
        for k, (label, predictor) in enumerate(predictors.items()):
            predictor.reader.store.close()
            predictor.reader.store = EmbeddingStore(work / f"{r}-{k}.sqlite")
            t = time.perf_counter()
            rows = [row for batch in iter_predictions(users, predictor) for row in batch]
            seconds[label].append(time.perf_counter() - t)
            assert len(rows) == len(users)
            print(f"round {r + 1}: {label}: {len(users) / seconds[label][-1]:.1f} users/s", file=sys.stderr)
    return seconds


def main() -> int:
    args = new_users_args(__doc__)
    from data_prep.dataset import discover_users

    users = discover_users([args.dataset])[:args.users]
    images = sum(len(u.files) for u in users)
    seconds = measure(users, args.rounds)
    info = machine()
    before = float(np.median(seconds["keras (before)"]))
    lines = ["# Profiling new users end to end (`bench/new_users.py`)", "",
             f"Machine: {info['cpu']} ({info['features']}), {info['cores']} cores. {len(users)} users, "
             f"{images} image files from `{args.dataset}`, an empty embedding cache each round, "
             f"median of {args.rounds} alternating rounds.", "",
             "| encoder runtime | users/s | images/s | × before |", "|---|---|---|---|"]
    result = {"machine": info, "users": len(users), "images": images, "seconds": seconds}
    for label in RUNTIMES:
        median = float(np.median(seconds[label]))
        lines.append(f"| {label} | {len(users) / median:.1f} | {images / median:.0f} | {before / median:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
