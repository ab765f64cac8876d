"""Run every benchmark stage and write ``results/benchmarks.md`` and ``results/benchmarks.json``.

Reproduce with:  make bench   (or .venv/bin/python bench/run.py [--quick] [--stages ...])

Each stage runs in its own process (so memory and TensorFlow state do not carry over)
and writes its figures as JSON under ``results/bench/``; this script then renders one
table. Every figure is measured in this run, never typed in: a median with its spread
over repeated runs (``runs`` = 1 marks a single long run; "projected" marks a figure
computed from a measured rate, not run). Stages:

- ``decode``  bench/decode.py: decode + resize + stack per core and on every core, at 64
  and 112 px, against a plain Pillow baseline measured in the same run;
- ``train``  bench/train_speed.py: Model 1 and Model 2 at 64 and 112 px, seconds per
  epoch, users per second, and the share of step time spent waiting on input;
- ``step``  bench/step_speed.py: the 3D CNNs' raw training step against a plain Keras sketch
  of the same layers and against the package's step before batch norm was fused, and the
  paper's protocol projected from it;
- ``encoder``  bench/encoder_speed.py: the machine's measured peaks (float32 in TensorFlow,
  float32 and int8 under LiteRT), the image encoder under Keras (the "before") and LiteRT
  float32 / int8 as a fraction of its runtime's peak, and new users profiled end to end
  with each runtime;
- ``inference``  bench/inference.py: batch 1, 32 and 128, compiled and eager, for both
  3D CNNs and the set model's head, the encoder per image, single-user latency, and
  each model's rate as a fraction of the machine's measured peak over its counted FLOPs;
- ``scaling``  bench/scaling.py: decode and ``profiler predict`` on 1,000 and 10,000
  users with peak memory, and projections to 100,000 and 1,000,000;
- ``default``  bench/default_model.py: the default set model as training makes it
  (EfficientNet-Lite2 int8 on the whole image and its centre crop, the ``latent`` head
  with a bank of the demo's size, the paper's and the largest ``bank_images`` allows)
  against the plain head and Lite0 the stages above measure: each bank's build time and
  memory, the head alone, its model file, new users end to end and one user's latency;
- ``score``  bench/score_speed.py: reading, validating and scoring 1,000,000 users.

The full run takes 25–50 minutes on 2 cores by machine (the ``default`` stage 8–11);
``--quick`` is a smoke test of the scripts with small sizes (its figures are not for
reporting). ``--stages`` runs some of
them; the others' figures are kept from their last run (``results/bench/STAGE.json``) and
marked so in the table, with the machine they were measured on.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"decode": "bench.decode", "train": "bench.train_speed", "step": "bench.step_speed",
          "encoder": "bench.encoder_speed", "inference": "bench.inference", "scaling": "bench.scaling",
          "default": "bench.default_model", "score": "bench.score_speed"}


def _value(f: dict) -> str:
    unit = f["unit"]
    fmt = (lambda v: f"{v:.0%}") if unit == "share" else (lambda v: f"{v:,.3g}" if v < 100 else f"{v:,.0f}")
    text = fmt(f["median"])
    if f["runs"] > 1:
        text += f" ({fmt(f['min'])}–{fmt(f['max'])})"
    return text + ("" if unit == "share" else f" {unit}")


def _note(f: dict) -> str:
    notes = []
    if "ratio_to_baseline" in f:
        notes.append(f"{f['ratio_to_baseline']:.2f}× {f.get('baseline', 'the plain baseline')}")
    if "share_of_peak" in f:
        notes.append(f"{f['share_of_peak']:.0%} of its runtime's measured peak")
    if "min_cosine_to_keras" in f:
        notes.append(f"cosine to Keras ≥ {f['min_cosine_to_keras']:.3f}")
    if "users_per_s" in f:
        notes.append(f"{f['users_per_s']:,.1f} users/s")
    if "ceiling_users_per_s" in f:
        notes.append(f"ceiling {f['ceiling_users_per_s']:,.0f} users/s")
    if "share_of_epoch" in f:
        notes.append(f"{f['share_of_epoch']:.1%} of an epoch's time")
    if "in_memory_s" in f:
        notes.append(f"{f['in_memory_s']:.2f} s an epoch from memory")
    if "peak_gib" in f:
        notes.append(f"peak memory allocated {f['peak_gib']:.1f} GiB")
    if "load_s" in f:
        notes.append(f"loads in {f['load_s']:.2f} s")
    if "workers_peak_mib" in f:
        notes.append(f"largest decoding worker {f['workers_peak_mib']:,.0f} MiB")
    if f.get("projected"):
        notes.append("projected, not run")
    return "; ".join(notes)


def render(results: dict, machine: dict, seconds: float) -> str:
    kept = [stage for stage, payload in results.items() if payload.get("kept")]
    lines = ["# Benchmarks", "",
             f"Machine: {machine['cpu']} with CPU features {machine['features']}, {machine['cores']} cores; "
             f"Python {machine['python']}, "
             + ", ".join(f"{k} {v}" for k, v in machine.items() if k not in ("cpu", "cores", "python", "features"))
             + (f". Made by `make bench` (`bench/run.py`) in {seconds / 60:.0f} min; every figure measured "
                "in that run" if not kept else
                f". Made by `bench/run.py --stages {' '.join(s for s in results if s not in kept)}` in "
                f"{seconds / 60:.0f} min; every figure of those stages measured in that run, the others' "
                f"({', '.join(kept)}) kept from an earlier run, each with its machine")
             + ": median (min–max) over repeated runs.", "",
             "Absolute rates depend on the CPU (machines with AVX-512 and VNNI run the int8 encoder and "
             "the convolutions much faster than AVX2-only ones): compare machines by the ratios (× the "
             "before or the plain baseline, measured side by side in the same run) and the shares of "
             "the peak measured on the same machine, not by the absolute figures.", ""]
    for stage, payload in results.items():
        lines += [f"## {stage}", ""]
        if payload.get("kept"):
            m = payload.get("machine", {})
            lines += [f"Not run this time (`--stages`): kept from `{payload['kept']}`, measured on "
                      f"{m.get('cpu', 'an unrecorded machine')} with {m.get('features', 'unrecorded features')}.", ""]
        lines += ["| figure | value | note |", "|---|---|---|"]
        lines += [f"| {f['figure']} | {_value(f)} | {_note(f)} |" for f in payload["figures"]]
        lines.append("")
    return "\n".join(lines)


def versions() -> dict:
    from importlib.metadata import version

    out = {}
    for package in ("tensorflow", "keras", "numpy", "pillow", "onnxruntime"):
        try:
            out[package] = version(package)
        except Exception:  # not installed
            out[package] = None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--quick", action="store_true", help="small sizes: check the scripts run")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.common import machine

    start = time.perf_counter()
    work = args.out / "bench"
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for stage in STAGES:
        if stage not in args.stages:  # not run now: an earlier run's figures, said so
            kept = work / f"{stage}.json"
            if kept.is_file():
                results[stage] = {**json.loads(kept.read_text()), "kept": str(kept.relative_to(ROOT))
                                  if kept.is_relative_to(ROOT) else str(kept)}
            continue
        cmd = [sys.executable, "-m", STAGES[stage], "--json", str(work / f"{stage}.json")]
        cmd += ["--quick"] if args.quick else []
        print(f"$ {' '.join(cmd[1:])}", flush=True)
        code = subprocess.call(cmd, cwd=ROOT)
        if code:
            print(f"stage {stage} failed (exit {code})", file=sys.stderr)
            return code
        results[stage] = json.loads((work / f"{stage}.json").read_text())
    seconds = time.perf_counter() - start
    info = {**machine(), **versions()}
    (args.out / "benchmarks.md").write_text(render(results, info, seconds) + "\n")
    (args.out / "benchmarks.json").write_text(json.dumps({"machine": info, "seconds": seconds,
                                                           "stages": results}, indent=2) + "\n")
    print(f"wrote {args.out / 'benchmarks.md'} and benchmarks.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
