"""Stage "default": the default set model's cost, as ``profiler train`` makes it.

Reproduce with:  .venv/bin/python -m bench.default_model [--json out.json] [--quick]

The other stages measure the encoder runtimes on EfficientNet-Lite0 and a plain set head
(mean and maximum pooling), which is what they were written for. The default model is
EfficientNet-Lite2 in int8 on the whole image and its centre crop (two networks' runs an
image) with the ``latent`` head, whose bank holds the training users' images (read
again for each image profiled: its nearest neighbours among them). Here it is built the
way training builds it (``SetFamily.build``: standardisation, EM over the bank's sources;
the learnt weights do not change the cost) from random embeddings of users of 11 images,
with a bank the size of the demo's (850 training users), of the paper's (3,500) and the
largest the default makes (``bank_images``: 100,000 images, 9,090 users of 11), measured
beside the plain head (the "before" the other stages measure), in one process:

1. **The head alone**: the time to build each bank (one run: the principal axes and the
   EM over the bank's images, whose nearest-neighbour search grows with the square of
   their number) and the peak of the memory allocated meanwhile (``tracemalloc``, which
   numpy's arrays report to; the synthetic embeddings included, TensorFlow's own not),
   users/s of a compiled forward pass at batch 1 and 32, each bank against the plain
   head; the model file's size and its load time.
2. **New users end to end**: ``profiler``'s prediction of users of 11 JPEGs with an empty
   embedding cache (decode, both views, the head), the default encoder with the
   paper-size bank against EfficientNet-Lite0 int8 with the plain head (the fastest
   encoder the ``encoder`` stage measures), alternating rounds; and one user's latency with
   the model loaded.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from bench.common import bench_jpegs, figure, plain_set_head, random_sets, stage_main, timed, warm

# training users whose images the bank holds (the refill: all of them); the largest bank,
# as many as the default's bank_images takes of users of 11 images, is added from the configuration
IMAGES_PER_USER = 11
BANKS = {"demo-size bank": 850, "paper-size bank": 3500}


def synthetic_embeddings(encoder, n_users: int, seed: int = 0):
    """``n_users`` users of ``IMAGES_PER_USER`` random embeddings of ``encoder``'s width, random labels."""
    from core.labels import LABELS, TRAITS
    from profiler.embeddings import EmbeddedData

    rng = np.random.default_rng(seed)
    counts = np.full(n_users, IMAGES_PER_USER)
    vectors = rng.normal(size=(int(counts.sum()), encoder.dim)).astype(np.float32)
    labels = {t: rng.integers(len(LABELS[t]), size=n_users) for t in TRAITS}
    return EmbeddedData(Path("synthetic"), encoder.identity, encoder.dim, [f"u{i:05d}" for i in range(n_users)],
                        vectors, counts, labels)


def default_model(encoder, n_users: int):
    """The default ``latent`` set model over a bank of ``n_users`` synthetic users (untrained weights)."""
    from profiler.config import resolve
    from profiler.families.sets import SETS

    config = resolve("default", overrides={"model": "set"})  # the default encoder, whose embeddings these stand for
    return SETS.build(config, synthetic_embeddings(encoder, n_users))


def heads(encoder, quick: bool, work: Path) -> tuple[list[dict], Path]:
    """The head alone per bank against the plain head; the paper-size model's path."""
    from profiler.models.io import load_model, save_model

    from profiler.config import resolve

    runs = 2 if quick else 5
    sizes = {**BANKS, "largest default bank": resolve("default").bank_images // IMAGES_PER_USER}
    banks = {f"{name} ({n:,} users)": n for name, n in ((name, 60 if quick else n) for name, n in sizes.items())}
    models = {"plain head (before)": plain_set_head(encoder)}
    build_s = {}
    for label, n in banks.items():
        tracemalloc.start()  # numpy's arrays are traced too
        start = time.perf_counter()
        models[f"latent head, {label}"] = default_model(encoder, n)
        build_s[label] = time.perf_counter() - start, tracemalloc.get_traced_memory()[1] / 2 ** 30
        tracemalloc.stop()
        print(f"built the {label} in {build_s[label][0]:.0f} s", file=sys.stderr)
    out, rates = [], {}
    for label, (seconds, peak) in build_s.items():  # the kNN over the bank grows with its square
        out.append(figure("build", f"latent head, {label}: built (axes, EM over the bank's sources)", [seconds], "s",
                          peak_gib=peak))
    for batch in (1, 32):
        for label, model in models.items():
            x = random_sets(model, batch, IMAGES_PER_USER)
            rates[label, batch] = [batch / t for t in timed(lambda: model.predict_on_batch(x), runs, warmup=2)]
    for batch in (1, 32):
        before = float(np.median(rates["plain head (before)", batch]))
        for label in models:
            r = rates[label, batch]
            out.append(figure("head", f"{label}: batch {batch}, compiled", r, "users/s",
                              ratio_to_baseline=float(np.median(r)) / before, baseline="the plain head"))
    paths = {}
    for label, model in models.items():
        path = save_model(model, work / f"{len(paths)}.keras")
        paths[label] = path
        loads = timed(lambda: load_model(path), 1 if quick else 3)
        out.append(figure("model file", f"{label}: model file", [path.stat().st_size / 2 ** 20], "MiB",
                          load_s=float(np.median(loads))))
    return out, paths[f"latent head, {list(banks)[1]}"]


def new_users(encoder, model_path: Path, quick: bool, work: Path) -> list[dict]:
    """Users of 11 JPEGs with an empty cache: the default model against Lite0 int8 + the plain head."""
    from bench.new_users import alternate
    from data_prep.dataset import load_dataset
    from profiler.embeddings import EmbeddingStore
    from profiler.encoders import get_encoder
    from profiler.models.io import save_model
    from profiler.prediction import Predictor, iter_predictions

    lite0 = get_encoder("efficientnet_lite0_int8")
    warm(lite0)
    baseline = save_model(plain_set_head(lite0), work / "lite0.keras")
    predictors = {"Lite0 int8 + plain head (before)": Predictor.load(baseline, encoder=lite0, store=work / "a.sqlite"),
                  "default model": Predictor.load(model_path, encoder=encoder, store=work / "b.sqlite")}
    n_users = 20 if quick else 100
    users = load_dataset(bench_jpegs(n_users)).users
    seconds = alternate(predictors, users, 1 if quick else 2, work)
    before = float(np.median(seconds["Lite0 int8 + plain head (before)"]))
    out = [figure("new users", f"{n_users} new users of 11 JPEGs end to end, {label}",
                  [n_users / t for t in s], "users/s", ratio_to_baseline=before / float(np.median(s)),
                  baseline="Lite0 int8 + plain head")
           for label, s in seconds.items()]
    predictor = predictors["default model"]
    user = users[:1]

    def once():  # a fresh cache each time: the images are new to it
        predictor.reader.store.close()
        predictor.reader.store = EmbeddingStore(work / f"one-{time.perf_counter_ns()}.sqlite")
        list(iter_predictions(user, predictor))

    out.append(figure("latency", "default model: one user of 11 JPEGs, model loaded",
                      [t * 1000 for t in timed(once, 3 if quick else 10, warmup=1)], "ms"))
    for p in predictors.values():
        p.reader.store.close()
    return out


def run(quick: bool = False) -> list[dict]:
    from profiler.backend import import_keras

    import_keras()
    from profiler.encoders import DEFAULT_ENCODER, get_encoder

    encoder = get_encoder(DEFAULT_ENCODER)
    warm(encoder)
    work = Path(tempfile.mkdtemp(prefix="bench-default-"))
    try:
        out, paper = heads(encoder, quick, work)
        out += new_users(encoder, paper, quick, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    stage_main(run, __doc__)
