"""Compare the image encoders for the set model on the sample data.

Reproduce with:
  .venv/bin/python -m bench.encoders [--data data/sample] [--out results/encoders.md]

For each encoder (by default the default encoder, Lite2 in int8 on the whole image alone,
Lite0 in int8 and open_nsfw): the time to embed images (decode and preprocessing included; median
and spread over 3 runs of 128 images into an empty cache), how well its embeddings tell
apart the sample data's signal emoji (1-nearest-neighbour accuracy of the test split's
signal images against the train split's, using the answer key ``manifest.csv``; a
diagnostic, not used by the model), and the set model trained on it with the
``default`` preset: test macro-F per trait and as a fraction of the Bayes rule's. Then,
for the first encoder, the head with each set pooling (``--poolings``), the rest of the
preset unchanged.
Embeddings of the whole sample go through the cache ``runs/bench/embeddings.sqlite``,
so a second run embeds nothing. Needs the sample data (``make demo`` makes it, or
``profiler sample-data data/sample --users 1000 --seed 0``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import machine
from profiler.encoders import DEFAULT_ENCODER


def embed_speed(name: str, paths: list[Path], runs: int = 3) -> dict:
    from profiler.embeddings import EmbeddingStore, compute_embeddings
    from profiler.encoders import get_encoder

    encoder = get_encoder(name)
    t = time.perf_counter()
    encoder.embed(np.stack([encoder.preprocess(_open(paths[0]))]))  # load weights, warm up
    load_s = time.perf_counter() - t
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp, EmbeddingStore(Path(tmp) / "e.sqlite"):
            t = time.perf_counter()
            compute_embeddings(encoder, paths)
            times.append((time.perf_counter() - t) / len(paths) * 1000)
    return {"load_s": load_s, "ms_per_image": statistics.median(times), "min_ms": min(times),
            "max_ms": max(times), "runs": runs, "images": len(paths)}


def _open(path):
    from data_prep.images import open_rgb

    return open_rgb(path)


def signal_recognition(name: str, data: Path, store) -> float:
    """1-NN accuracy of test signal images' emoji against the train split's (cosine)."""
    from sklearn.neighbors import KNeighborsClassifier

    from profiler.embeddings import content_digest
    from profiler.encoders import get_encoder

    generator = json.loads((data / "generator.json").read_text())
    signal: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            signal.update(x for x in node if isinstance(x, str))

    walk(generator["pools"])
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    manifest = manifest[(manifest["broken"] == "") & manifest["item"].isin(signal)]
    digests = [content_digest(data / s / "images" / u / f)
               for s, u, f in zip(manifest["split"], manifest["user_id"], manifest["file"])]
    found = store.get(get_encoder(name).identity, digests)
    x = np.stack([found[d] for d in digests])
    train = (manifest["split"] == "train").to_numpy()
    x = x - x[train].mean(axis=0)
    knn = KNeighborsClassifier(1, metric="cosine").fit(x[train], manifest["item"][train])
    return float((knn.predict(x[~train]) == manifest["item"][~train].to_numpy()).mean())


def set_model_scores(name: str, data: Path, store, work: Path, seed: int, **overrides) -> dict:
    from data_prep.dataset import load_dataset
    from core.labels import TRAITS
    from profiler.config import resolve
    from profiler.embeddings import EmbeddedData
    from profiler.demo import BAYES_NAME
    from profiler.runs import predict_dataset, score_files, write_submission
    from profiler.training import train

    config = resolve("default", overrides={"model": "set", "encoder": name, "seed": seed, **overrides})
    embedded = EmbeddedData.for_training(load_dataset(data / "train"), config, store)
    run = work / "_".join([name, *map(str, overrides.values())])
    shutil.rmtree(run, ignore_errors=True)
    t = time.perf_counter()
    summary = train(embedded, run, config, progress=False)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    write_submission(predict_dataset(run / "model.keras", data / "test", progress=False, store=store),
                     run / "test.txt")
    predict_s = time.perf_counter() - t
    results = score_files(data / "test", {name: run / "test.txt",
                                          BAYES_NAME: data / "bayes_rule_test.txt"}, baselines=False)
    f = {t: results[name]["traits"][t]["F"] for t in TRAITS}
    ceiling = {t: results[BAYES_NAME]["traits"][t]["F"] for t in TRAITS}
    return {"macro_f": f, "fraction_of_ceiling": {t: f[t] / ceiling[t] for t in TRAITS},
            "head_train_s": train_s, "epochs": summary["epochs_run"],
            "best_epoch": summary["best_epoch"], "predict_test_s": predict_s,
            "test_users": len(load_dataset(data / "test").users)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/sample"))
    parser.add_argument("--work", type=Path, default=Path("runs/bench"))
    parser.add_argument("--encoders", nargs="+", default=[DEFAULT_ENCODER, "efficientnet_lite2_int8",
                                                           "efficientnet_lite0_int8", "open_nsfw"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poolings", nargs="*", default=["latent", "neighbours", "evidence", "mean", "attention"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (args.data / "manifest.csv").is_file():
        print(f"{args.data}: no sample data here (run 'make demo' first)", file=sys.stderr)
        return 1
    from data_prep.dataset import load_dataset
    from profiler.embeddings import EmbeddingStore
    from profiler.encoders import get_encoder

    sample = [f for u in load_dataset(args.data / "test").users for f in u.files if f.suffix != ".txt"][:128]
    rows = {}
    args.work.mkdir(parents=True, exist_ok=True)
    with EmbeddingStore(args.work / "embeddings.sqlite") as store:
        for name in args.encoders:
            print(f"{name}: timing", file=sys.stderr, flush=True)
            speed = embed_speed(name, sample)
            print(f"{name}: set model", file=sys.stderr, flush=True)
            scores = set_model_scores(name, args.data, store, args.work, args.seed)
            rows[name] = {"identity": get_encoder(name).identity, "dim": get_encoder(name).dim,
                          "description": get_encoder(name).description, "speed": speed,
                          "signal_1nn": signal_recognition(name, args.data, store), **scores}
        pooling_rows = {}
        for pooling in args.poolings:
            print(f"{args.encoders[0]}: set pooling {pooling}", file=sys.stderr, flush=True)
            pooling_rows[pooling] = set_model_scores(args.encoders[0], args.data, store, args.work,
                                                     args.seed, set_pooling=pooling)
    traits = ("gender", "location", "occupation")
    table = pd.DataFrame([{
        "encoder": name, "dim": r["dim"],
        "ms / image": f"{r['speed']['ms_per_image']:.1f} ({r['speed']['min_ms']:.1f}-{r['speed']['max_ms']:.1f})",
        "signal emoji 1-NN": f"{r['signal_1nn']:.3f}",
        **{f"{t} F": f"{r['macro_f'][t]:.3f} ({r['fraction_of_ceiling'][t]:.0%})" for t in traits},
        "head train s": f"{r['head_train_s']:.0f}",
    } for name, r in rows.items()])
    here = machine()
    lines = ["# Encoders for the set model, compared on the sample data", "",
             f"Machine: {here['cpu']} ({here['features']}), {here['cores']} cores. Reproduce: "
             "`.venv/bin/python -m bench.encoders`.", "",
             "ms / image: decode, preprocess and embed, median (min-max) of 3 runs of 128 images. "
             "Signal emoji 1-NN: how often a test signal image's nearest train image shows the same "
             "emoji. F: the set model's test macro-F (fraction of the Bayes rule's).", "",
             table.to_markdown(index=False), ""]
    lines += [f"- `{name}`: {r['identity']}: {r['description']}" for name, r in rows.items()]
    if pooling_rows:
        pooling_table = pd.DataFrame([{
            "set pooling": pooling,
            **{f"{t} F": f"{r['macro_f'][t]:.3f} ({r['fraction_of_ceiling'][t]:.0%})" for t in traits},
            "mean fraction": f"{np.mean(list(r['fraction_of_ceiling'].values())):.0%}",
            "epochs (best kept)": f"{r['epochs']} ({r['best_epoch']})", "head train s": f"{r['head_train_s']:.0f}",
        } for pooling, r in pooling_rows.items()])
        lines += ["", f"## Set pooling ({args.encoders[0]}, `default` preset otherwise)", "",
                  pooling_table.to_markdown(index=False)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from core.io import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)
        atomic_write_text(args.out.with_suffix(".json"), json.dumps(
            {"machine": here, "encoders": rows, "poolings": pooling_rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
