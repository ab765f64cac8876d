"""Run the benchmark scripts that exist so far and write their tables into results/.

Reproduce with:  make bench   (or .venv/bin/python bench/run.py)

- bench/prepare_speed.py: decode + resize + stack, 1 and 2 workers, draft on and off;
- bench/score_speed.py: reading, validating and scoring 1,000,000 users;
- bench/predict_speed.py: single-user latency and users per second, if ``make demo`` has
  left a trained model in runs/demo (otherwise it says so and skips).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    python = sys.executable
    steps = [["-m", "bench.prepare_speed", "--out", "results/bench_prepare.md"],
             ["-m", "bench.score_speed", "--out", "results/bench_score.md"]]
    model = ROOT / "runs" / "demo" / "model1" / "model.keras"
    if model.is_file():
        steps.append(["-m", "bench.predict_speed", "--model", str(model), "--data", "data/sample",
                      "--out", "results/bench_predict.md"])
    else:
        print(f"skipping bench/predict_speed.py: no {model.relative_to(ROOT)} (run 'make demo' first)")
    for step in steps:
        print(f"$ python {' '.join(step)}", flush=True)
        code = subprocess.call([python, *step], cwd=ROOT)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
