"""Stage "train": training speed of Model 1 and Model 2 at 64 and 112 px, and input waiting.

Reproduce with:  .venv/bin/python -m bench.train_speed [--json out.json] [--quick]

Data: 96 users of 11 JPEGs (random labels), prepared into a cache. Each model is
trained through the package's own pipeline (``EpochData`` -> ``tf.data`` -> ``fit``) for
3 epochs; the figures are the median over epochs 2 and 3 (epoch 1 traces the graph).
Input waiting: the same model trained on the same batches already in memory
(``from_tensor_slices``, cached); the share of the pipeline's epoch time it saves is the
share of step time spent waiting on input. The input pipeline is also timed alone
(producing one epoch of batches); its time over the epoch's bounds what it can cost.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bench_jpegs, figure, stage_main


def _cache(n_users: int, size: int):
    from data_prep.cache import PrepareConfig, prepare
    from core.labels import LABELS, TRAITS

    root = bench_jpegs(n_users)
    rng = np.random.default_rng(0)
    truth = root / "truth.txt"
    if not truth.is_file():
        lines = [":::".join([p.name, *(LABELS[t][rng.integers(len(LABELS[t]))] for t in TRAITS)])
                 for p in sorted((root / "images").iterdir())]
        truth.write_text("\n".join(lines) + "\n")
    out = Path(tempfile.gettempdir()) / "profiler-bench-cache" / f"u{n_users}-{size}"
    return prepare(root, out, config=PrepareConfig(height=size, width=size), workers=2, progress=False)


def _epoch_times(model, dataset, epochs: int) -> list[float]:
    import keras

    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(dataset, epochs=epochs, callbacks=[Clock()], verbose=0, shuffle=False)
    return times[1:]


def run(quick: bool = False) -> list[dict]:
    from profiler.backend import import_keras

    import_keras()
    import tensorflow as tf

    from profiler.config import resolve
    from profiler.families import VOLUMES
    from profiler.training import EpochData, compile_model, set_determinism

    n_users, epochs = (32, 2) if quick else (96, 3)
    out = []
    for size in (64, 112):
        cache = _cache(n_users, size)
        positions = np.arange(len(cache))
        for name in ("model1", "model2"):
            config = resolve("default", overrides={"model": name, "size": size, "epochs": epochs})
            set_determinism(0)
            data = EpochData(VOLUMES, cache, positions, config, train=True)
            model = VOLUMES.build(config, cache, positions)
            compile_model(model, config, len(data))
            piped = _epoch_times(model, data.dataset(), epochs)
            start = time.perf_counter()
            batches = list(data.batches())
            generator_s = time.perf_counter() - start
            x = np.concatenate([b[0] for b in batches])
            y = {t: np.concatenate([b[1][t] for b in batches]) for t in batches[0][1]}
            w = {t: np.concatenate([b[2][t] for b in batches]) for t in batches[0][2]}
            memory = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(config.batch_size).cache()
            model = VOLUMES.build(config, cache, positions)
            compile_model(model, config, len(data))
            in_memory = _epoch_times(model, memory.prefetch(tf.data.AUTOTUNE), epochs)
            out.append(figure("train", f"{name} {size} px: seconds per epoch of {n_users} users",
                              piped, "s"))
            out.append(figure("train", f"{name} {size} px: users per second", [n_users / t for t in piped],
                              "users/s"))
            waits = [max(0.0, 1 - m / p) for m, p in zip(sorted(in_memory), sorted(piped))]
            out.append(figure("train", f"{name} {size} px: share of step time waiting on input", waits,
                              "share", in_memory_s=float(np.median(in_memory))))
            out.append(figure("train", f"{name} {size} px: input pipeline alone (one epoch of batches)",
                              [n_users / generator_s], "users/s",
                              share_of_epoch=float(generator_s / np.median(piped))))
    return out


if __name__ == "__main__":
    stage_main(run, __doc__)
