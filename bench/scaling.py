"""Stage "scaling": how time and memory grow with the number of users.

Reproduce with:  .venv/bin/python -m bench.scaling [--json out.json] [--quick]

Datasets of 1,000 and 10,000 users of 11 JPEGs of 400x400 (hard links to a pool of
photo-like images, so making them is cheap; every file is still opened and decoded).
Decode (``decode_users``, every core) and the whole ``profiler predict`` command (Model 1
at 64 px, CSV output, its own process) are run on each; 100,000 users and more are
projected from the 10,000-user rate, not run. Peak memory is the predict process's
maximum resident set (``getrusage``), with its decoding workers' reported apart: it
must not grow with the number of users.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bench_jpegs, figure, stage_main, untrained

LAUNCH = ("import atexit, resource, sys\n"
          "def report():\n"
          "    s = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
          "    c = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
          "    print('PEAK_RSS_KB', s, c, file=sys.stderr)\n"
          "atexit.register(report)\n"
          "from cli.main import main\n"
          "main(sys.argv[1:], prog_name='profiler')\n")


def linked_dataset(n_users: int) -> Path:
    """``n_users`` users whose 11 files are hard links into a 40-user JPEG dataset."""
    pool_root = bench_jpegs(40)
    pool = sorted((pool_root / "images").rglob("*.jpg"))
    root = Path(tempfile.gettempdir()) / "profiler-bench-linked" / f"u{n_users}"
    if (root / "images").is_dir() and len(os.listdir(root / "images")) == n_users:
        return root
    rng = np.random.default_rng(n_users)
    for u in range(n_users):
        folder = root / "images" / f"user{u:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j, k in enumerate(rng.integers(len(pool), size=11)):
            target = folder / f"{j:02d}.jpg"
            if not target.exists():
                os.link(pool[k], target)
    return root


def predict_run(data: Path, model: Path) -> tuple[float, int, int]:
    """Seconds, peak RSS (kB) of the predict process and of its largest worker."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCH, "predict", str(data), "--model", str(model),
                           "--format", "csv", "-o", os.devnull, "-q"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 3):
        raise RuntimeError(done.stderr[-2000:])
    line = next(x for x in done.stderr.splitlines() if x.startswith("PEAK_RSS_KB"))
    _, own, children = line.split()
    return seconds, int(own), int(children)


def run(quick: bool = False) -> list[dict]:
    from data_prep.cache import PrepareConfig, decode_users, default_workers
    from data_prep.dataset import load_dataset
    from profiler.backend import import_keras

    import_keras()
    from profiler.models.io import save_model

    sizes = (200, 1000) if quick else (1000, 10000)
    config = PrepareConfig(height=64, width=64)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model1.keras"
        save_model(untrained("model1"), model)
        for n in sizes:
            data = linked_dataset(n)
            users = load_dataset(data).users
            start = time.perf_counter()
            for _ in decode_users(users, config, workers=default_workers()):
                pass
            decode_s = time.perf_counter() - start
            out.append(figure("scaling", f"decode {n:,} users (64 px, every core)", [decode_s], "s",
                              users_per_s=n / decode_s))
            seconds, own, children = predict_run(data, model)
            out.append(figure("scaling", f"profiler predict {n:,} users (Model 1), whole command", [seconds],
                              "s", users_per_s=n / seconds))
            out.append(figure("scaling", f"profiler predict {n:,} users: peak memory (main process)",
                              [own / 1024], "MiB", workers_peak_mib=children / 1024))
        largest = sizes[-1]
        decode_rate = next(f for f in out if f["figure"].startswith(f"decode {largest:,}"))["users_per_s"]
        predict_rate = next(f for f in out if f["figure"].startswith(f"profiler predict {largest:,} users (")
                            )["users_per_s"]
        for n in (100_000, 1_000_000):
            out.append(figure("scaling", f"decode {n:,} users: projected from the {largest:,}-user rate",
                              [n / decode_rate], "s", projected=True))
            out.append(figure("scaling", f"profiler predict {n:,} users: projected", [n / predict_rate], "s",
                              projected=True))
    return out


if __name__ == "__main__":
    stage_main(run, __doc__)
