"""How faithful the explanations are: the deletion test, and how often they point at telling images.

Reproduce with (after ``make demo``, whose models and sample data it reads):
  .venv/bin/python -m bench.explain [--data data/sample] [--runs runs/demo] [--out results/explanations.md]

For each model and test user with more than ``K`` usable images, each trait's images are
ranked by their effect on the predicted class (``profiler.prediction.explain_user``). The
deletion test takes out the k top-ranked images (k = 1..K) and, beside it, k images chosen
at random (``DRAWS`` draws per user, seeded), and records how far the predicted class's
probability falls; a faithful ranking makes it fall further than chance. On the sample
data the generator's answer key (``manifest.csv``) says which images are telling for a
trait (their item is in one of its classes' pools; a person at work tells the occupation and the gender): the report gives how often the
top-ranked image is telling, against the share of telling images among the user's images
(what a random pick would get), with 95 % bootstrap intervals over the users.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import machine

K = 3
DRAWS = 3
MODELS = {"set": "Set model", "model1": "3D CNN Model 1", "model2": "3D CNN Model 2"}


def telling_items(data: Path) -> tuple[dict, dict]:
    """(split, user, file) -> item from the manifest; trait -> the items telling for it."""
    import pandas as pd

    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    item = {(r.split, r.user_id, r.file): r.item for r in manifest.itertuples(index=False)}
    pools = json.loads((data / "generator.json").read_text())["pools"]

    def items(*names):
        return {i for name in names for values in pools[name].values() for i in values}

    # a person doing a job ("female/arts") shows the user's occupation and gender
    return item, {"gender": items("gender", "occupation_people"), "location": items("location"),
                  "occupation": items("occupation_people", "occupation_objects")}


def measure(model: Path, data: Path, store: Path, *, seed: int = 0, batch: int = 32) -> dict:
    """The deletion curves and the telling-image rates of one model on the test split."""
    from core.labels import TRAITS
    from data_prep.dataset import discover_users
    from profiler.prediction import Predictor, explain_user

    item, telling = telling_items(data)
    predictor = Predictor.load(model, store=store)
    users = discover_users([data / "test"])
    rng = np.random.default_rng(seed)
    top = {t: [] for t in TRAITS}  # per user: the fall after taking out the top k, k = 1..K
    chance = {t: [] for t in TRAITS}  # per user: the mean fall after taking out k random images
    hit = {t: [] for t in TRAITS}  # per user: is the top-ranked image telling
    base = {t: [] for t in TRAITS}  # per user: the share of its images that are telling
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        for user, got in zip(chunk, predictor.reader.featurize(chunk, 0)):
            if got.count <= K:
                continue
            evidence = explain_user(predictor, got)
            _, names = predictor.reader.ablations(got, [()])
            position = {name: i for i, name in enumerate(names)}
            randoms = [tuple(rng.permutation(len(names))[:k]) for _ in range(DRAWS) for k in range(1, K + 1)]
            drops = randoms + [tuple(position[e["images"][j]["file"]] for j in range(k))
                               for t in TRAITS for k in range(1, K + 1) for e in [evidence[t]]]
            stack, _ = predictor.reader.ablations(got, drops)
            probs = predictor.probabilities(stack)
            for n, t in enumerate(TRAITS):
                c = predictor.info["labels"][t].index(evidence[t]["class"])
                fall = evidence[t]["probability"] - probs[t][:, c]
                chance[t].append(fall[:DRAWS * K].reshape(DRAWS, K).mean(axis=0))
                top[t].append(fall[DRAWS * K + n * K: DRAWS * K + (n + 1) * K])
                kinds = [item.get(("test", user.user_id, name)) in telling[t] for name in names]
                hit[t].append(float(kinds[position[evidence[t]["images"][0]["file"]]]))
                base[t].append(float(np.mean(kinds)))
    out = {}
    for t in TRAITS:
        top_t, chance_t = np.array(top[t]), np.array(chance[t])
        out[t] = {"users": len(top_t), "k": list(range(1, K + 1)),
                  "fall_top": top_t.mean(axis=0).tolist(), "fall_random": chance_t.mean(axis=0).tolist(),
                  "fall_gap_ci95": _ci(top_t - chance_t, rng),
                  "top_is_telling": float(np.mean(hit[t])), "top_is_telling_ci95": _ci(np.array(hit[t])[:, None], rng)[0],
                  "telling_share": float(np.mean(base[t]))}
    return out


def _ci(values: np.ndarray, rng: np.random.Generator, rounds: int = 1000) -> list:
    """95 % bootstrap intervals over the users (rows) of each column's mean."""
    idx = rng.integers(0, len(values), size=(rounds, len(values)))
    means = values[idx].mean(axis=1)
    return np.percentile(means, [2.5, 97.5], axis=0).T.round(4).tolist()


def report(results: dict) -> str:
    from tabulate import tabulate

    rows = []
    for name, traits in results.items():
        for t, r in traits.items():
            rows.append({"model": name, "trait": t, "users": r["users"],
                         **{f"fall top {k} / random": f"{a:.3f} / {b:.3f}"
                            for k, a, b in zip(r["k"], r["fall_top"], r["fall_random"])},
                         f"gap at k={K} (95% CI)": "{:.3f} ({:.3f}-{:.3f})".format(
                             r["fall_top"][-1] - r["fall_random"][-1], *r["fall_gap_ci95"][-1]),
                         "top image telling (95% CI)": "{:.2f} ({:.2f}-{:.2f})".format(
                             r["top_is_telling"], *r["top_is_telling_ci95"]),
                         "telling share": f"{r['telling_share']:.2f}"})
    return tabulate(rows, headers="keys", tablefmt="github")


def plot(results: dict, path: Path) -> None:
    from profiler.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), sharey=False)
    for ax, t in zip(axes, ("gender", "location", "occupation")):
        for n, (name, traits) in enumerate(results.items()):
            r = traits[t]
            color = f"C{n}"
            ax.plot(r["k"], r["fall_top"], "-o", color=color, label=f"{name}: top-ranked")
            ax.plot(r["k"], r["fall_random"], "--", color=color, alpha=0.6, label=f"{name}: random")
        ax.set_title(t)
        ax.set_xlabel("images taken out")
        ax.set_xticks(range(1, K + 1))
    axes[0].set_ylabel("fall of the predicted class's probability")
    axes[-1].legend(fontsize=7)
    fig.suptitle("Deletion test on the sample test split (bench/explain.py)", fontsize=9)
    save_figure(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/sample"))
    parser.add_argument("--runs", type=Path, default=Path("runs/demo"))
    parser.add_argument("--models", default="set,model1,model2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = {}
    for name in args.models.split(","):
        print(f"{name}: explaining the test users", file=sys.stderr, flush=True)
        results[MODELS[name]] = measure(args.runs / name / "model.keras", args.data, args.runs / "embeddings.sqlite",
                                        seed=args.seed)
    info = machine()
    text = "\n".join([
        "# Explanations: the deletion test (`bench/explain.py`)", "",
        f"Machine: {info['cpu']} ({info['features']}), {info['cores']} cores. The models of `make demo` "
        f"on its sample test split. Per trait, the fall of the predicted class's probability when the k "
        f"images that the explanation ranks highest are taken out, against k random images ({DRAWS} draws "
        "a user); the gap's 95 % interval is over the users. Then how often the top-ranked image is "
        "telling for the trait (the generator's answer key), against the share of telling images "
        f"(a random pick's rate). Users with more than {K} usable images. Curves: `deletion_curves.png`.",
        "", report(results), ""]) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        (args.out.with_suffix(".json")).write_text(json.dumps({"machine": info, "results": results}, indent=2) + "\n")
        plot(results, args.out.parent / "deletion_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
