"""Stage "inference": users per second at batch 1, 32 and 128, latency, and the limit.

Reproduce with:  .venv/bin/python -m bench.inference [--json out.json] [--quick]

Models: Model 1 and Model 2 at 64 px, and the set model's head (EfficientNet-Lite0
embeddings, 2,560-d, cap 32) with, separately, its encoder per image; weights are
random (speed does not depend on them). For each batch size: users per second of a
compiled forward pass (``predict_on_batch``) and of an eager call (``model(x)``), median
of 5 after a warm-up. Latency: one user of 11 JPEGs through ``Predictor`` (decode,
embed or stack, model), model loaded, median of 10. Before/after: ``Predictor`` with the
eager model call it used before and the compiled call it uses now, on one user and on
200 users, in the same run.

The limit: each model's forward FLOPs per user are counted from its layers
(``profiler.models.flops``); the machine's peak is measured in the same run as the best
of a 2048x2048 float32 matrix product in TensorFlow. Peak / FLOPs is the ceiling in
users per second; the best measured rate is reported as a fraction of it.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bench_jpegs, figure, plain_set_head, random_sets, stage_main, timed, untrained


def measured_peak(runs: int = 10) -> list[float]:
    """GFLOP/s of a 2048x2048 float32 matrix product (TensorFlow, all cores)."""
    import tensorflow as tf

    n = 2048
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    matmul(a, b).numpy()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        matmul(a, b).numpy()
        out.append(2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return out


def _models():
    from profiler.models.set_head import SetProfiler

    out = {}
    for name in ("model1", "model2"):
        out[name] = (untrained(name),
                     lambda n: np.random.default_rng(0).integers(0, 255, (n, 11, 64, 64, 3), np.uint8))
    head = SetProfiler(2560, cap=32, encoder="efficientnet_lite0:avgmax@bench")
    out["set head"] = (head, lambda n: random_sets(head, n))
    return out


def run(quick: bool = False) -> list[dict]:
    from profiler.backend import import_keras

    import_keras()
    from profiler.encoders import get_encoder
    from profiler.models.flops import flops_per_user

    runs = 2 if quick else 5
    batches = (1, 32) if quick else (1, 32, 128)
    peak = measured_peak(3 if quick else 10)
    out = [figure("limit", "measured peak: 2048x2048 float32 matmul", peak, "GFLOP/s")]
    encoder = get_encoder("efficientnet_lite0")
    encoder_flops = flops_per_user(encoder.network)
    best_peak = max(peak) * 1e9
    for name, (model, inputs) in _models().items():
        flops = flops_per_user(model)
        rates = {}
        for batch in batches:
            x = inputs(batch)
            compiled = timed(lambda: model.predict_on_batch(x), runs, warmup=2)
            eager = timed(lambda: model(x, training=False), runs, warmup=1)
            rates[batch] = [batch / t for t in compiled]
            out.append(figure("inference", f"{name}: batch {batch}, compiled", rates[batch], "users/s"))
            out.append(figure("inference", f"{name}: batch {batch}, eager call", [batch / t for t in eager],
                              "users/s"))
        best = max(float(np.median(r)) for r in rates.values())
        ceiling = best_peak / flops
        out.append(figure("limit", f"{name}: FLOPs per user (counted)", [flops / 1e9], "GFLOP"))
        out.append(figure("limit", f"{name}: best inference as a fraction of peak/FLOPs", [best / ceiling],
                          "share", ceiling_users_per_s=ceiling))
    # the encoder, per image
    x = np.random.default_rng(0).normal(size=(16, 224, 224, 3)).astype(np.float32)
    enc_times = timed(lambda: encoder.embed(x), runs, warmup=1)
    rates = [16 / t for t in enc_times]
    out.append(figure("inference", "EfficientNet-Lite0 encoder: batch 16, compiled", rates, "images/s"))
    eager = timed(lambda: encoder.network(x, training=False), runs, warmup=1)
    out.append(figure("inference", "EfficientNet-Lite0 encoder: batch 16, eager call", [16 / t for t in eager],
                      "images/s"))
    out.append(figure("limit", "EfficientNet-Lite0: FLOPs per image (counted)", [encoder_flops / 1e9], "GFLOP"))
    out.append(figure("limit", "EfficientNet-Lite0: inference as a fraction of peak/FLOPs",
                      [float(np.median(rates)) / (best_peak / encoder_flops)], "share"))
    out += latency(quick)
    out += before_after(quick)
    return out


def before_after(quick: bool) -> list[dict]:
    """``Predictor`` end to end as it was (an eager model call) and as it is (compiled), in one run."""
    from data_prep.cache import default_workers
    from data_prep.dataset import load_dataset
    from profiler.models.io import save_model
    from profiler.prediction import Predictor, iter_predictions

    class EagerPredictor(Predictor):  # the code before: ``self.model(chunk, training=False)``
        def _forward(self, chunk):  # (these models record no ood score: no items needed)
            return self.model(chunk, training=False), [None] * len(chunk)

    n_users = 40 if quick else 200
    root = bench_jpegs(n_users)
    users = load_dataset(root).users
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, _) in _models().items():
            if name == "set head":
                continue
            path = Path(tmp) / f"{name}.keras"
            save_model(model, path)
            for label, kind in (("before: eager call", EagerPredictor), ("after: compiled", Predictor)):
                predictor = kind.load(path)
                list(iter_predictions(users[:1], predictor))  # warm-up
                one = timed(lambda: list(iter_predictions(users[:1], predictor)), 3 if quick else 10)
                many = timed(lambda: list(iter_predictions(users, predictor, workers=default_workers())),
                             1 if quick else 3)
                out.append(figure("predict", f"{name}: one user, model loaded, {label}",
                                  [t * 1000 for t in one], "ms"))
                out.append(figure("predict", f"{name}: {n_users} users (decode + model), {label}",
                                  [n_users / t for t in many], "users/s"))
    return out


def latency(quick: bool) -> list[dict]:
    """One user of 11 JPEGs end to end through ``Predictor``, models saved and loaded."""
    from data_prep.dataset import load_dataset
    from profiler.embeddings import EmbeddingStore
    from profiler.models.io import save_model
    from profiler.prediction import Predictor, iter_predictions

    root = bench_jpegs(40)
    user = load_dataset(root).users[0]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, _) in _models().items():
            if name == "set head":
                from profiler.encoders import get_encoder

                model = plain_set_head(get_encoder("efficientnet_lite0"))
                name = "set model (encoder + head)"
            path = Path(tmp) / f"{name.split()[0]}.keras"
            save_model(model, path)
            with EmbeddingStore(Path(tmp) / "e.sqlite") as store:
                predictor = Predictor.load(path, store=store)
                list(iter_predictions([user], predictor))  # warm-up; embeds the 11 images

                def once():
                    reader = predictor.reader
                    embeds = hasattr(reader, "store")
                    if embeds:  # a fresh cache each time: the images are new to it
                        reader.store = EmbeddingStore(Path(tmp) / f"e{time.perf_counter_ns()}.sqlite")
                    list(iter_predictions([user], predictor))
                    if embeds:
                        reader.store.close()

                times = timed(once, 3 if quick else 10)
            out.append(figure("latency", f"{name}: one user of 11 JPEGs, model loaded",
                              [t * 1000 for t in times], "ms"))
    return out


if __name__ == "__main__":
    stage_main(run, __doc__)
