"""The image encoder's runtimes side by side, against the machine's measured peaks.

Reproduce with:  .venv/bin/python -m bench.encoder_speed [--quick] [--json FILE]
(``make bench`` runs it as the ``encoder`` stage.)

1. **Peaks**, measured in this run: the best rate of a float32 matrix product in
   TensorFlow (what the Keras encoder runs on), and of a stack of fully connected layers
   under LiteRT's XNNPACK delegate in float32 and in full-integer int8 (what the LiteRT
   encoders run on), each on all usable cores.
2. **The network alone**: EfficientNet-Lite0 over the same preprocessed photo-like images
   with Keras (the "before") and with LiteRT in float32 and int8, interleaved rounds;
   images/s, the ratio to Keras, each rate as a fraction of its runtime's peak over the
   network's counted FLOPs (an int8 operation counted as one FLOP), and the cosine between
   each runtime's embeddings and Keras'.
3. **New users end to end**: ``profiler``'s prediction of users of 11 JPEGs each with an
   empty embedding cache (decode, preprocess, embed, the head), per runtime, interleaved
   rounds; users/s and the ratio to Keras (``bench/new_users.py`` on the sample data gives
   the same on real images).
"""
from __future__ import annotations

import time

import numpy as np

from bench.common import bench_jpegs, embedding_rates, figure, photo_like, stage_main

RUNTIMES = {"keras (before)": "efficientnet_lite0", "litert float32": "efficientnet_lite0_float32",
            "litert int8": "efficientnet_lite0_int8"}
PEAK_WIDTH, PEAK_ROWS, PEAK_LAYERS = 1024, 256, 4


def litert_peaks(runs: int) -> dict[str, list[float]]:
    """GOP/s of ``PEAK_LAYERS`` dense layers (``PEAK_ROWS`` x ``PEAK_WIDTH``) under LiteRT, float32 and int8."""
    import contextlib
    import io
    import tempfile
    from pathlib import Path

    from ai_edge_litert.interpreter import Interpreter

    from data_prep.cache import default_workers
    from profiler.backend import compute_threads, import_keras, quiet_stderr

    keras = import_keras()
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((PEAK_WIDTH,), batch_size=PEAK_ROWS)
    x = inputs
    for _ in range(PEAK_LAYERS):
        x = keras.layers.Dense(PEAK_WIDTH, use_bias=False)(x)
    model = keras.Model(inputs, x)
    sample = np.random.default_rng(0).normal(size=(PEAK_ROWS, PEAK_WIDTH)).astype(np.float32)
    ops = 2 * PEAK_ROWS * PEAK_WIDTH * PEAK_WIDTH * PEAK_LAYERS
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("float32", "int8"):
            options = {}
            if mode == "int8":
                options = {"optimizations": [tf.lite.Optimize.DEFAULT],
                           "representative_dataset": lambda: iter([[sample]]),
                           "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}}
            path = Path(tmp) / f"peak-{mode}.tflite"
            with quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):
                model.export(str(path), format="litert", verbose=False, **options)
                interpreter = Interpreter(model_path=str(path), num_threads=compute_threads() or default_workers())
            entry = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(entry["index"], [PEAK_ROWS, PEAK_WIDTH])
            interpreter.allocate_tensors()
            interpreter.set_tensor(entry["index"], sample)
            interpreter.invoke()
            rates = []
            for _ in range(runs):
                start = time.perf_counter()
                for _ in range(5):
                    interpreter.invoke()
                rates.append(5 * ops / (time.perf_counter() - start) / 1e9)
            out[mode] = rates
    return out


def network(images: int, runs: int) -> tuple[dict, dict, dict]:
    """Images/s per runtime (interleaved rounds), the cosine to Keras', and each encoder."""
    from profiler.encoders import get_encoder

    encoders = {label: get_encoder(name) for label, name in RUNTIMES.items()}
    rng = np.random.default_rng(0)
    base = encoders["keras (before)"]
    x = np.stack([base.preprocess(photo_like(rng, 256)) for _ in range(images)])
    for encoder in encoders.values():
        encoder.embed(x[:encoder.chunk])  # build or convert, load, warm up
    rates, embeddings = embedding_rates(encoders, x, runs)
    reference = embeddings["keras (before)"]
    cosines = {}
    for label, e in embeddings.items():
        cosine = (e * reference).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(reference, axis=1)
        cosines[label] = float(cosine.min())
    return rates, cosines, encoders


def run(quick: bool = False) -> list[dict]:
    from bench.inference import measured_peak
    from bench.new_users import measure
    from data_prep.dataset import load_dataset
    from profiler.models.flops import flops_per_user

    runs = 2 if quick else 5
    out = []
    peaks = {"keras (before)": measured_peak(3 if quick else 10)}
    out.append(figure("peak", "float32 matmul, TensorFlow (2048x2048)", peaks["keras (before)"], "GFLOP/s"))
    lite = litert_peaks(runs)
    peaks["litert float32"], peaks["litert int8"] = lite["float32"], lite["int8"]
    out.append(figure("peak", f"float32 dense layers, LiteRT XNNPACK ({PEAK_ROWS}x{PEAK_WIDTH})",
                      lite["float32"], "GFLOP/s"))
    out.append(figure("peak", f"int8 dense layers, LiteRT XNNPACK ({PEAK_ROWS}x{PEAK_WIDTH})",
                      lite["int8"], "GOP/s", ratio_to_baseline=float(np.median(lite["int8"]) / np.median(lite["float32"])),
                      baseline="LiteRT float32"))
    rates, cosines, encoders = network(32 if quick else 256, runs)
    flops = flops_per_user(encoders["keras (before)"].network)
    out.append(figure("encoder", "EfficientNet-Lite0: operations per image (counted)", [flops / 1e9], "GFLOP"))
    before = float(np.median(rates["keras (before)"]))
    for label, r in rates.items():
        share = float(np.median(r)) * flops / (max(peaks[label]) * 1e9)
        out.append(figure("encoder", f"network alone, {label}", r, "images/s",
                          ratio_to_baseline=float(np.median(r)) / before, baseline="Keras (before)",
                          share_of_peak=share,
                          min_cosine_to_keras=cosines[label]))
    users = load_dataset(bench_jpegs(30 if quick else 200)).users
    seconds = measure(users, 1 if quick else 2, RUNTIMES)
    slowest = float(np.median(seconds["keras (before)"]))
    for label, s in seconds.items():
        out.append(figure("new users", f"{len(users)} new users of 11 JPEGs end to end, {label}",
                          [len(users) / t for t in s], "users/s", ratio_to_baseline=slowest / float(np.median(s)),
                          baseline="Keras (before)"))
    return out


if __name__ == "__main__":
    stage_main(run, __doc__)
