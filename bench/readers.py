"""Which gap holds the set model: the features, or the labels its EM finds? A measurement.

Reproduce with (the sample datasets and their cached activations first, as for
``bench/adapt.py``):
  .venv/bin/python -m bench.readers data/science/m0 data/science/m1

The instance-probe reference (``data_prep.sample.probe``) reads each image through a
*linear* probe trained on the answer key. The default set model reads an image another
way: through its nearest training images on the latent head's whitened axes, each with
the sources (noise, or a trait's class) that the head's EM gave it from its user's labels
alone (``profiler.models.latent``). This script puts the two apart on the same features
(the default network, Lite2, as float, from ``bench.adapt``'s cached activations: the
frozen top), every reader combined per test user with Bayes' rule under the generator's
prior:

- ``linear probe, answer key``: the instance-probe reference;
- ``neighbours, answer-key sources``: the head's own reading (its axes, ``latent_neighbours``
  neighbours, ``latent_temperature``, the pseudo-votes) with the answer key's source of
  every training image in the bank: what the head's kind of reader gets with perfect
  per-image labels;
- ``neighbours, EM sources``: the same reading with the EM's sources, as the head starts
  from before its learnt correction (``SourceReader``) is trained: the EM as it was (its
  first round from the users' labels alone, 4 rounds; ``plain start``), as the default runs
  it now (its first round from the neighbours' labels, every neighbour trusted alike:
  ``latent_start_trust``) and with ``latent_start_by_rank`` (the farther neighbours' trust
  falling as their labels' agreement does), each on the axes it whitens; the answer key is
  read on the default's axes.

Gender is read from the side view (the EM with the gender x occupation pairs), location
and occupation from the main view, as the default model reads them. The EM's sources are
also scored against the answer key per kind of source: of the images that truly show a
kind, the share the EM gives their source (recall); of those it gives a source of that
kind, the share that truly show it (precision). An item whose emission is raised for
combinations that restrict no single trait (3 of 1,884) counts as noise; an item shared
by two classes' pools counts as its most emitting class.

Results go to ``--out`` (``results/readers.md`` and ``.json``), with 95 % bootstrap
intervals. Nothing is tuned: the head's settings are the default preset's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import machine

READERS = ("linear probe, answer key", "neighbours, answer-key sources", "neighbours, EM sources")
#: the EM as it was (its first round from the users' labels alone, 4 rounds), the default's
#: (started from the neighbours' labels, one trust for all) and with the trust by rank
EMS = ("plain start", "default: started from the neighbours' labels", "the start's trust by neighbour rank")
PLAIN_ROUNDS = 4


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def item_sources(process, classes: tuple[int, ...], plan) -> dict[str, int]:
    """Each item's source in ``plan`` (``profiler.models.latent.layout``) by the answer key."""
    combos = np.array(list(np.ndindex(*classes)))
    offset = np.concatenate([[1], 1 + np.cumsum(classes)])
    pair_offset = {pair: int(1 + sum(classes) + sum(classes[a] * classes[b] for a, b in plan.pairs[:j]))
                   for j, pair in enumerate(plan.pairs)}
    out = {}
    for i, name in enumerate(process.items):
        column = process.emission[:, i]
        raised = combos[column > column.min() + 1e-12]
        if not len(raised):
            out[name] = 0
            continue
        fixed = tuple(t for t in range(len(classes)) if len(set(raised[:, t])) == 1)
        if len(fixed) == 2 and fixed in pair_offset:
            a, b = fixed
            out[name] = pair_offset[fixed] + raised[0, a] * classes[b] + raised[0, b]
        elif fixed:
            t = fixed[-1]  # a pair's item without the pair's sources: its second trait (occupation)
            out[name] = int(offset[t] + raised[0, t])
        else:
            restricted = [t for t in range(len(classes)) if len(set(raised[:, t])) < classes[t]]
            best = combos[column.argmax()]
            out[name] = int(offset[restricted[0]] + best[restricted[0]]) if restricted else 0
    return out


def measure(data: Path, cache: Path, bootstrap: int = 1000) -> dict:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from bench.adapt import Run, cache_activations, split_network
    from core.labels import LABELS, TRAITS
    from data_prep.sample.probe import InstanceProbe
    from profiler import evaluation
    from profiler.config import resolve
    from profiler.families.sets import _pairs
    from profiler.models.latent import layout, nearest, read_sources, sources_of, whitened_sources

    config = resolve("default", overrides={"model": "set"})
    t = time.perf_counter()
    run = Run(data, *cache_activations(data, cache / data.name))
    _, _, top = split_network()
    feats = run.features(top, np.arange(len(run.meta)))
    timings = {"features_s": time.perf_counter() - t}
    train, test = feats[run.train], feats[run.test]
    labels = run.user_labels(run.train)
    ids, user = np.unique(run.meta.user_id.values[run.test], return_inverse=True)
    truth = run.truth["test"]
    ceiling = evaluation.score(truth, run.bayes)["traits"]
    classes = tuple(len(LABELS[t]) for t in TRAITS)

    def scored(margins) -> dict:
        table = pd.DataFrame({t: [LABELS[t][k] for k in margins[t].argmax(axis=1)] for t in TRAITS}, index=ids)
        scores = evaluation.score(truth, table, bootstrap=bootstrap, seed=0)["traits"]
        return {t: {"F": scores[t]["F"], "ci95": scores[t]["ci95"]["F"], "accuracy": scores[t]["Acc"],
                    "ceiling": 100 * scores[t]["F"] / ceiling[t]["F"]} for t in TRAITS}

    t = time.perf_counter()
    probe = InstanceProbe(run.process).fit(train, run.meta.item.values[run.train])
    results = {READERS[0]: scored(probe.marginals(test, user, len(ids)))}
    timings["probe_s"] = time.perf_counter() - t

    # the head's axes and EMs, as profiler.families.sets.fill_sources computes them
    t = time.perf_counter()
    scaler = StandardScaler().fit(train)
    standard, standard_test = scaler.transform(train).astype(np.float32), scaler.transform(test).astype(np.float32)
    pca_axes = PCA(config.neighbour_dims, svd_solver="randomized",
                   random_state=config.seed).fit(standard).components_.T.astype(np.float32)
    main = layout(classes, _pairs(config.latent_pairs))
    side = layout(classes, _pairs(config.latent_side_pairs))

    def unit(rows):
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    def em(start, rounds):
        """The main and side views' EMs, and each test image's neighbours on their axes."""
        settings = dict(k=config.latent_neighbours, temperature=config.latent_temperature, rounds=rounds, start=start)
        axes, projected, em_main = whitened_sources(standard, pca_axes, labels, main,
                                                    whiten=config.latent_whiten, **settings)
        em_side = whitened_sources(standard, axes, labels, side, **settings)[2]
        near = nearest(unit(standard_test @ axes), unit(projected), config.latent_neighbours,
                       config.latent_temperature, exclude_same=False)
        return {"main": em_main, "side": em_side, "near": near}

    start = (config.latent_start_trust, config.latent_start_temperature)
    ems = {EMS[0]: em(None, PLAIN_ROUNDS), EMS[1]: em((*start, False), config.latent_rounds),
           EMS[2]: em((*start, True), config.latent_rounds)}
    timings["em_s"] = time.perf_counter() - t

    def posterior(near, responsibilities, pi, emission):
        q = read_sources(*near, responsibilities, pi, 1.0)
        log_post = np.tile(np.log(run.process.prior), (len(ids), 1))
        np.add.at(log_post, user, np.log(np.maximum(q @ emission.T, 1e-300)))
        post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        post = (post / post.sum(axis=1, keepdims=True)).reshape(len(ids), *classes)
        return {t: post.sum(axis=tuple(1 + a for a in range(len(classes)) if a != k)) for k, t in enumerate(TRAITS)}

    def answer_key(plan):
        source = item_sources(run.process, classes, plan)
        true = np.array([source[name] for name in run.meta.item.values[run.train]])
        r = np.full((len(true), plan.sources), 0.02 / plan.sources)
        r[np.arange(len(true)), true] += 0.98
        sources = sources_of(r, plan)
        return true, r, sources.pi, sources.emission

    side_traits = set(config.latent_side_traits)

    def combined(main_margins, side_margins):
        return {t: (side_margins if t in side_traits else main_margins)[t] for t in TRAITS}

    keys = {"main": answer_key(main), "side": answer_key(side)}
    near = ems[EMS[1]]["near"]  # the answer key read on the default head's axes
    results[READERS[1]] = scored(combined(posterior(near, *keys["main"][1:]), posterior(near, *keys["side"][1:])))
    for name, found in ems.items():
        results[f"{READERS[2]} ({name})"] = scored(combined(*(
            posterior(found["near"], found[v].responsibilities, found[v].pi, found[v].emission)
            for v in ("main", "side"))))

    kinds = ["noise"] + list(TRAITS)
    agreement = {}
    for name, found in ems.items():
        for view, plan in (("main", main), ("side", side)):
            true, given = keys[view][0], found[view].responsibilities.argmax(axis=1)
            rows = {}
            for k in range(1, plan.kinds):
                kind = kinds[k] if k < len(kinds) else "pair " + "*".join(TRAITS[i] for i in plan.pairs[k - len(kinds)])
                shows, said = plan.kind[true] == k, plan.kind[given] == k
                right = given == true
                rows[kind] = {"images": int(shows.sum()),
                              "recall": float(right[shows].mean()) if shows.any() else None,
                              "precision": float(right[said].mean()) if said.any() else None}
            agreement[f"{name}, {view}"] = {"overall": float((given == true).mean()), "kinds": rows}
    m = machine()
    return {"data": str(data), "machine": f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('features')}",
            "images": {"train": int(len(run.train)), "test": int(len(run.test))}, "timings": timings,
            "readers": results, "em_sources": agreement}


def render(runs: list[dict]) -> str:
    from tabulate import tabulate

    from core.labels import TRAITS

    parts = ["# Which gap holds the set model: the readers of one set of features (`bench/readers.py`)", ""]
    for run in runs:
        rows = []
        for name, scores in run["readers"].items():
            row = {"reader": name}
            for t in TRAITS:
                lo, hi = scores[t]["ci95"]
                row[f"{t} F [95% CI]"] = f"{scores[t]['F']:.3f} [{lo:.3f}, {hi:.3f}]"
                row[f"{t} % ceiling"] = f"{scores[t]['ceiling']:.0f}"
            rows.append(row)
        parts += [f"## {run['data']}: {run['images']['train']} training / {run['images']['test']} test images", "",
                  f"Measured on {run['machine']}; seconds: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in run["timings"].items()) + ".", "",
                  tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github", showindex=False), "",
                  "The EM's sources of the training images against the answer key (argmax):", ""]
        rows = []
        for view, agreement in run["em_sources"].items():
            for kind, r in agreement["kinds"].items():
                rows.append({"EM, view": view, "kind": kind, "images": r["images"],
                             "recall": "" if r["recall"] is None else f"{r['recall']:.3f}",
                             "precision": "" if r["precision"] is None else f"{r['precision']:.3f}",
                             "all images agree": f"{agreement['overall']:.3f}"})
        parts += [tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github", showindex=False), ""]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", type=Path, help="sample dataset folders")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench/adapt"),
                        help="folder of bench.adapt's cached activations (computed there if missing)")
    parser.add_argument("--out", type=Path, default=Path("results/readers.md"))
    args = parser.parse_args()
    from core.io import atomic_write_text

    runs = []
    for data in args.data:
        _log(f"{data}:")
        runs.append(measure(data, args.cache))
        atomic_write_text(args.out.with_suffix(".json"), json.dumps(runs, indent=1) + "\n")
        atomic_write_text(args.out, render(runs))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
