"""Benchmark ``profiler prepare``: users per second with 1 and 2 workers, draft on and off.

Reproduce with:  .venv/bin/python bench/prepare_speed.py [--users 200] [--runs 3]
It makes 200 users of 11 JPEGs of 400x400 under /tmp (once), then prepares them at 64 px.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.common import machine, make_jpeg_dataset, repeat
from data_prep.cache import PrepareConfig, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "profiler-bench-jpeg")
    args = parser.parse_args()
    root = make_jpeg_dataset(args.data / f"u{args.users}", args.users)
    lines = [f"machine: {machine()}",
             f"{args.users} users x 11 JPEGs of 400x400 -> {args.size} px, median of {args.runs} runs",
             "", "| workers | draft | users/s | s (median) | spread |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    out = Path(tempfile.mkdtemp(prefix="profiler-bench-cache-"))
    for draft in (True, False):
        for workers in (1, 2):
            config = PrepareConfig(height=args.size, width=args.size, draft=draft)
            t = repeat(lambda c=config, w=workers: prepare(root, out / "c", config=c, workers=w,
                                                           force=True, progress=False), args.runs)
            lines.append(f"| {workers} | {'on' if draft else 'off'} | {args.users / t['median_s']:.0f} | "
                         f"{t['median_s']:.2f} | {t['min_s']:.2f}-{t['max_s']:.2f} |")
            print(lines[-1], flush=True)
    shutil.rmtree(out, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# profiler prepare: decode speed\n\nMade by `python -m bench.prepare_speed "
                            f"--out {args.out}`.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
