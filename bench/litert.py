"""The image encoder under LiteRT (float32 and int8) against the Keras network, side by side.

Reproduce with:
  .venv/bin/python -m bench.litert [DATASET ...] [--store FILE] [--out results/litert.md]

1. **Speed** in one process, the three runtimes interleaved over the same preprocessed
   images (the network alone: no decoding), images/s over ``--runs`` rounds, and each
   LiteRT mode's ratio to Keras.
2. **Agreement**: the cosine between each mode's embeddings and Keras' on those images.
3. **Accuracy**: for each DATASET (a sample dataset with train/ and test/; default
   data/sample), the set model trained with the ``default`` preset on each runtime's
   embeddings: test macro-F per trait with 95 % bootstrap intervals (1000 resamples),
   beside the Bayes rule's. int8 is fit to be the default only where its macro-F is
   nowhere below float's interval (the lower end), on every trait.

Embeddings go through ``--store`` (default runs/bench/embeddings.sqlite), so a second run
embeds nothing; the converted models go to the cache directory (``profiler.encoders.litert``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import embedding_rates, machine

RUNTIMES = {"keras": "efficientnet_lite0", "litert float32": "efficientnet_lite0_float32",
            "litert int8": "efficientnet_lite0_int8"}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def speed_and_agreement(test: Path, images: int, runs: int) -> dict:
    from data_prep.dataset import load_dataset
    from data_prep.images import open_rgb
    from profiler.encoders import get_encoder

    encoders = {label: get_encoder(name) for label, name in RUNTIMES.items()}
    base = encoders["keras"]
    inputs = []
    for user in load_dataset(test).users:
        for path in user.files:
            try:
                inputs.append(base.preprocess(open_rgb(path, base.draft)))
            except Exception:  # a broken file of the sample data
                continue
        if len(inputs) >= images:
            break
    x = np.stack(inputs[:images])
    out = {"images": len(x), "runs": runs}
    for label, encoder in encoders.items():
        t = time.perf_counter()
        encoder.embed(x[:encoder.chunk])  # build or convert, load, warm up
        out[f"{label} start s"] = time.perf_counter() - t
    rates, embeddings = embedding_rates(encoders, x, runs)
    reference = embeddings["keras"]
    for label in encoders:
        out[label] = {"images_per_s": float(np.median(rates[label])), "all": rates[label],
                      "ratio_to_keras": float(np.median(rates[label]) / np.median(rates["keras"]))}
        e = embeddings[label]
        cosine = (e * reference).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(reference, axis=1)
        out[label]["cosine_to_keras"] = {"min": float(cosine.min()), "median": float(np.median(cosine))}
    return out


def accuracy(data: Path, store_path: Path, work: Path, seed: int, runtimes: list[str]) -> dict:
    from core.labels import TRAITS
    from data_prep.dataset import load_dataset
    from profiler.config import resolve
    from profiler.embeddings import EmbeddedData, EmbeddingStore
    from profiler.evaluation import load_truth_for_scoring
    from profiler.runs import BOOTSTRAP, predict_dataset, score_files, score_table
    from profiler.training import train

    truth = load_truth_for_scoring(data / "test")
    out = {"Bayes rule": score_files(data / "test", {"bayes": data / "bayes_rule_test.txt"},
                                     baselines=False)["bayes"]}
    for label in runtimes:
        name = RUNTIMES[label]
        _log(f"{data}: the set model on {label} embeddings")
        config = resolve("default", overrides={"model": "set", "encoder": name, "seed": seed})
        with EmbeddingStore(store_path) as store:
            t = time.perf_counter()
            embedded = EmbeddedData.for_training(load_dataset(data / "train"), config, store)
            embed_s, new = time.perf_counter() - t, store.misses
        run = work / f"{data.name}-{name}-{seed}"
        shutil.rmtree(run, ignore_errors=True)
        train(embedded, run, config, progress=False)
        with EmbeddingStore(store_path) as store:
            table = predict_dataset(run / "model.keras", data / "test", progress=False, store=store)
        result = score_table(truth, table, bootstrap=BOOTSTRAP, seed=seed)
        out[label] = result | {"embed_train_s": embed_s, "embedded_new": new}
        _log("  " + "  ".join(f"{t} {result['traits'][t]['F']:.3f}" for t in TRAITS))
    return out


def render(speed: dict, scores: dict[str, dict], info: dict) -> str:
    from core.labels import TRAITS

    lines = ["# The encoder under LiteRT against Keras", "",
             f"Machine: {info['cpu']} ({info['features']}), {info['cores']} cores. "
             "Reproduce: `.venv/bin/python -m bench.litert`.", "",
             f"## Speed and agreement ({speed['images']} preprocessed images, the network alone, "
             f"median of {speed['runs']} interleaved rounds)", "",
             "| runtime | images/s | × Keras | cosine to Keras, min / median | first call s |",
             "|---|---|---|---|---|"]
    for label in RUNTIMES:
        r = speed[label]
        lines.append(f"| {label} | {r['images_per_s']:.0f} | {r['ratio_to_keras']:.2f} | "
                     f"{r['cosine_to_keras']['min']:.4f} / {r['cosine_to_keras']['median']:.4f} | "
                     f"{speed[f'{label} start s']:.1f} |")
    lines += ["", "First call: building (Keras) or converting and loading (LiteRT; converted once, "
              "then read from the cache directory).", ""]
    for data, result in scores.items():
        bayes = result["Bayes rule"]["traits"]
        lines += [f"## The set model's test macro-F on `{data}` (95 % bootstrap intervals)", "",
                  "| runtime | " + " | ".join(TRAITS) + " | not below float's interval |",
                  "|---|" + "---|" * (len(TRAITS) + 1)]
        reference = result["keras"]["traits"]
        for label in [r for r in RUNTIMES if r in result]:
            traits = result[label]["traits"]
            cells = [f"{traits[t]['F']:.3f} ({traits[t]['ci95']['F'][0]:.3f}-{traits[t]['ci95']['F'][1]:.3f})"
                     for t in TRAITS]
            inside = all(traits[t]["F"] >= reference[t]["ci95"]["F"][0] for t in TRAITS)
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {'yes' if inside else 'no'} |")
        lines.append("| Bayes rule (ceiling) | " + " | ".join(f"{bayes[t]['F']:.3f}" for t in TRAITS) + " | |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", type=Path, default=[Path("data/sample")])
    parser.add_argument("--store", type=Path, default=Path("runs/bench/embeddings.sqlite"))
    parser.add_argument("--work", type=Path, default=Path("runs/bench/litert"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-accuracy", action="store_true", help="speed and agreement only")
    parser.add_argument("--runtimes", nargs="+", choices=list(RUNTIMES), default=list(RUNTIMES),
                        help="runtimes whose set model is trained and scored (keras always)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="render again from saved .json results (speed from the first; scores merged)")
    args = parser.parse_args()
    if args.from_json:
        saved = [json.loads(path.read_text()) for path in args.from_json]
        scores = {k: v for r in saved for k, v in r["scores"].items()}
        text = render(saved[0]["speed"], scores, saved[0]["machine"])
        for other in saved[1:]:  # the same measurement in the other runs
            text += ("\nThe speed measured again in the run of " + ", ".join(f"`{d}`" for d in other["scores"])
                     + ": " + "; ".join(f"{label} {other['speed'][label]['images_per_s']:.0f} images/s "
                                        f"({other['speed'][label]['ratio_to_keras']:.2f}x)" for label in RUNTIMES)
                     + ".\n")
        print(text)
        if args.out:
            args.out.write_text(text)
            args.out.with_suffix(".json").write_text(json.dumps(
                {"machine": saved[0]["machine"], "speed": saved[0]["speed"], "scores": scores,
                 "also_measured": [r["speed"] for r in saved[1:]]}, indent=2) + "\n")
        return 0
    for data in args.datasets:
        if not (data / "bayes_rule_test.txt").is_file():
            print(f"{data}: not a sample dataset (run 'make demo' or 'profiler sample-data')", file=sys.stderr)
            return 1
    _log("speed and agreement")
    speed = speed_and_agreement(args.datasets[0] / "test", args.images, args.runs)
    runtimes = ["keras", *[r for r in args.runtimes if r != "keras"]]
    scores = {} if args.no_accuracy else {str(d): accuracy(d, args.store, args.work, args.seed, runtimes)
                                          for d in args.datasets}
    info = machine()
    text = render(speed, scores, info)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(
            {"machine": info, "speed": speed, "scores": scores}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
