"""Where a 3D CNN's training step goes, and what batch normalisation costs and buys.

Reproduce with (after ``make demo``, whose prepared image cache part 2 trains on):
  .venv/bin/python -m bench.step_cost [--cache runs/demo/cache] [--work runs/step_cost] [--out results/step_cost.md]

1. **Step rate**, raw ``train_on_batch`` on fixed random batches of 16 users at 64 px, each
   variant built and compiled in the same process and timed in interleaved rounds (median
   of the rounds), so they see the same machine:

   - ``plain sketch``: Conv3D + ReLU + max-pool per block, global average pooling, the dense
     layer and the three heads; float input in [0, 1]; compiled with Adam and the losses only;
   - ``sketch + uint8 rescaling``: the same, fed uint8 and rescaled inside (as the package does);
   - ``package, batch norm off``: ``Cnn3dProfiler(batch_norm=False)``, compiled as ``profiler train`` does;
   - ``package, Keras batch norm (before)``: batch normalisation after every convolution by
     Keras' own ``BatchNormalization`` layer, as the package had it;
   - ``package (fused batch norm)``: the default, the same normalisation by ``VolumeBatchNorm``
     (TensorFlow's fused kernel).

   The whole set runs twice, in two processes: TensorFlow's op determinism off and on
   (``profiler train`` turns it on).
2. **What batch norm buys**: Model 1 and Model 2 trained as the demo trains them (the
   ``default`` preset, 8 epochs at most, 64 px, seed 0) with and without it, on the demo's
   prepared training split: the best validation mean macro-F and seconds per epoch. Each
   run goes to ``--work``/MODEL-bn-on|off; a finished run found there is read, not trained
   again (training is deterministic for its seed, so it would end the same; delete ``--work``
   after changing the models' code).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import machine

BATCH, SIZE, P = 16, 64, 11
STEPS, ROUNDS = 12, 5


def _sketch(variant: str, uint8: bool):
    """A plain Keras 3D CNN with the package model's layers, minus batch norm."""
    from core.labels import LABELS, TRAITS
    from profiler.backend import import_keras
    from profiler.models.cnn3d import block_list

    keras = import_keras()
    inputs = keras.Input((P, SIZE, SIZE, 3), dtype="uint8" if uint8 else "float32")
    x = keras.layers.Rescaling(1.0 / 255)(inputs) if uint8 else inputs
    for filters, pool in block_list(variant):
        x = keras.layers.Conv3D(filters, (2, 3, 3), padding="same", activation="relu")(x)
        if pool is not None:
            x = keras.layers.MaxPooling3D(pool, padding="same")(x)
    x = keras.layers.GlobalAveragePooling3D()(x)
    x = keras.layers.Dropout(0.5)(keras.layers.Dense(256, activation="relu")(x))
    model = keras.Model(inputs, {t: keras.layers.Dense(len(LABELS[t]), activation="softmax", name=t)(x)
                                 for t in TRAITS})
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss={t: "sparse_categorical_crossentropy" for t in TRAITS})
    return model


def _package(variant: str, batch_norm: bool, keras_layer: bool = False):
    from profiler.config import resolve
    from profiler.models import cnn3d
    from profiler.training import compile_model

    config = resolve("default", overrides={"model": variant, "size": SIZE, "batch_norm": batch_norm})
    fused = cnn3d.VolumeBatchNorm
    if keras_layer:  # the layer the trunk builder picks up, for this build only
        cnn3d.VolumeBatchNorm = cnn3d.keras.layers.BatchNormalization
    try:
        model = cnn3d.Cnn3dProfiler(variant, p=P, height=SIZE, width=SIZE, batch_norm=batch_norm)
    finally:
        cnn3d.VolumeBatchNorm = fused
    compile_model(model, config, steps_per_epoch=100)
    return model


def step_rates(deterministic: bool, rounds: int = ROUNDS, steps: int = STEPS, keep=None) -> dict:
    """Users per second of each variant's training step (median of interleaved rounds).

    ``keep``: the names of the variants to time (default: all).
    """
    from core.labels import LABELS, TRAITS
    from profiler.backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 256, (BATCH, P, SIZE, SIZE, 3), dtype=np.uint8)
    labels = {t: rng.integers(0, len(LABELS[t]), BATCH) for t in TRAITS}
    out = {}
    for variant in ("model1", "model2"):
        variants = {"plain sketch": (_sketch(variant, False), volume.astype(np.float32) / 255),
                    "sketch + uint8 rescaling": (_sketch(variant, True), volume),
                    "package, batch norm off": (_package(variant, False), volume),
                    "package, Keras batch norm (before)": (_package(variant, True, keras_layer=True), volume),
                    "package (fused batch norm)": (_package(variant, True), volume)}
        variants = {name: v for name, v in variants.items() if keep is None or name in keep}
        times = {name: [] for name in variants}
        for model, x in variants.values():
            for _ in range(3):  # build, trace, warm up
                model.train_on_batch(x, labels)
        for _ in range(rounds):
            for name, (model, x) in variants.items():
                start = time.perf_counter()
                for _ in range(steps):
                    model.train_on_batch(x, labels)
                times[name].append(time.perf_counter() - start)
        out[variant] = {name: [BATCH * steps / t for t in ts] for name, ts in times.items()}
    return out


def trained(cache: Path, variant: str, batch_norm: bool, work: Path) -> dict:
    """Model ``variant`` trained as the demo does, with or without batch norm: its summary."""
    from data_prep.cache import Cache
    from profiler.config import resolve
    from profiler.training import train

    config = resolve("default", overrides={"model": variant, "epochs": 8, "seed": 0, "size": SIZE,
                                           "batch_norm": batch_norm})
    run = work / f"{variant}-bn-{'on' if batch_norm else 'off'}"
    done = run / "summary.json"
    if done.is_file() and json.loads((run / "config.json").read_text()) == json.loads(json.dumps(config.to_json())):
        return json.loads(done.read_text())
    return train(Cache.open(cache), run, config, progress=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("runs/demo/cache"))
    parser.add_argument("--work", type=Path, default=Path("runs/step_cost"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rates-only", choices=["deterministic", "fast"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rates_only:  # the child process of part 1
        print(json.dumps(step_rates(args.rates_only == "deterministic")))
        return 0
    rates = {}
    for mode in ("fast", "deterministic"):
        print(f"step rates, op determinism {'on' if mode == 'deterministic' else 'off'}", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, "-m", "bench.step_cost", "--rates-only", mode],
                              capture_output=True, text=True, check=True)
        rates[mode] = {variant: {name: float(np.median(r)) for name, r in by_name.items()}
                       for variant, by_name in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    summaries = {}
    for variant in ("model1", "model2"):
        for batch_norm in (True, False):
            print(f"training {variant}, batch norm {'on' if batch_norm else 'off'}", file=sys.stderr, flush=True)
            s = trained(args.cache, variant, batch_norm, args.work)
            summaries[f"{variant} {batch_norm}"] = {
                "model": variant, "batch_norm": batch_norm, "mean_macro_f": s["validation"]["mean_macro_f"],
                "macro_f": {t: s["validation"][t]["macro_f"] for t in ("gender", "location", "occupation")},
                "seconds_per_epoch": s["seconds_per_epoch"], "best_epoch": s["best_epoch"]}
    info = machine()
    lines = ["# Where a 3D CNN's training step goes (`bench/step_cost.py`)", "",
             f"Machine: {info['cpu']} ({info['features']}), {info['cores']} cores. Part 1: raw `train_on_batch` "
             f"of {BATCH} users at {SIZE} px, median of {ROUNDS} interleaved rounds of {STEPS} steps, in users/s "
             "and as a share of the plain sketch's rate (same process, same machine).", "",
             "| model | variant | determinism off | determinism on |", "|---|---|---|---|"]
    for variant in ("model1", "model2"):
        base = {mode: rates[mode][variant]["plain sketch"] for mode in rates}
        for name in rates["fast"][variant]:
            cells = [f"{rates[mode][variant][name]:.1f} ({rates[mode][variant][name] / base[mode]:.2f}×)"
                     for mode in ("fast", "deterministic")]
            lines.append(f"| {variant} | {name} | {cells[0]} | {cells[1]} |")
    lines += ["", "Part 2: trained as `make demo` trains them (the `default` preset, 8 epochs at most, 64 px, "
              "seed 0) on the demo's training split, with and without batch norm: the best epoch's validation "
              "macro-F (gender / location / occupation, and their mean) and the median seconds per epoch.", "",
              "| model | batch norm | validation macro-F | mean | s / epoch | best epoch |", "|---|---|---|---|---|---|"]
    for s in summaries.values():
        f = s["macro_f"]
        lines.append(f"| {s['model']} | {'on' if s['batch_norm'] else 'off'} | {f['gender']:.3f} / "
                     f"{f['location']:.3f} / {f['occupation']:.3f} | {s['mean_macro_f']:.3f} | "
                     f"{s['seconds_per_epoch']:.1f} | {s['best_epoch']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"machine": info, "step_rates": rates,
                                                             "trained": summaries}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
