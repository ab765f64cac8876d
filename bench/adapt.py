"""Would adapting the encoder raise the features' limit? A measurement, not a model.

Reproduce with (the sample datasets first, as for ``bench/science.py``):
  profiler sample-data data/science/s0 --users 1000 --seed 0
  .venv/bin/python -m bench.adapt data/science/s0 data/science/s1 [--modes oracle,em,nb,lse] [--epochs 3]
  (--update: add or replace these datasets' runs and keep the others in --out; --model: also
  train and score the default set model on the frozen top's and each oracle/em top's features)

The oracle and em modes train the top with the package's own code
(``profiler.encoders.adapted``: ``adapt_top``, ``source_targets``), as ``profiler train
--adapt-epochs`` does; here the features come from cached float16 activations and the
probe is refitted after every epoch.

The default encoder is EfficientNet-Lite2 on the whole image and its centre crop. Here its
float Keras network is cut before its last MBConv block: every image's two views are run
once up to the cut and the activations cached (9 x 9 x 208 per view, float16, under
``--cache``), so that training the top (the last block and the head convolution, 1.2 M
weights; batch normalisation frozen) costs under a minute an epoch on 2 cores at the
demo's size. The features are the top's output as the encoder gives them (the average and
maximum of the final map, averaged over the two views). Each mode trains a fresh copy of
the top for ``--epochs`` epochs (Adam, ``--lr``) on 80 % of the training users, and after
every epoch the instance probe (``data_prep.sample.probe``: a linear probe fitted afresh
on the training images' answer-key groups, combined per user by Bayes' rule) reads the
new features; its macro-F on the test users is the features' limit:

- ``frozen``: the top as installed (the reference every mode is read against);
- ``oracle``: trained to tell each image's answer-key group (a softmax over the groups):
  per-image labels no user has, so an upper bound on what adapting the top can give;
- ``em``: trained towards the latent head's own EM responsibilities (each image's
  sources, found from its user's labels as ``profiler.models.latent.fit_sources`` does it
  in training, on 512 whitened principal axes), refitted after each cycle (``--cycles``):
  the per-image targets a model can have;
- ``nb``: end to end through a naive-Bayes head per trait (each image's log-probabilities
  over the trait's classes summed per user, a softmax cross-entropy on the user's label);
- ``lse``: end to end through a smooth maximum (log-mean-exp, sharpness 4) of the
  images' logits per class: a user's score for a class is led by its most telling image.

Results (per mode and epoch, with 95 % bootstrap intervals for the last epoch; an epoch's
``train_s`` is the training alone) go to
``--out`` (``results/adapt.md`` and ``.json``); the tuning is fixed in advance (no test
figure chooses anything).
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

VIEWS = 2
BATCH_IMAGES = 64  # images per step (two views each)
USERS_PER_STEP = 8  # users per step of the end-to-end modes
MODES = ("oracle", "em", "nb", "lse")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def split_network():
    """(encoder, bottom, top): a fresh Lite2 float network cut before its last block
    (``profiler.encoders.adapted.split_network``)."""
    from profiler.encoders.adapted import split_network as split
    from profiler.encoders.efficientnet_lite import EfficientNetLite2Encoder

    encoder = EfficientNetLite2Encoder()
    return (encoder, *split(encoder.network))


def cache_activations(data: Path, prefix: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Every sample image's activations at the cut, (n, 2, 9, 9, 208) float16, and its
    split, user, file and item; computed once into ``prefix``.npy / .csv."""
    from core.io import atomic_path, atomic_write_text
    from data_prep.images import open_rgb
    from profiler.encoders.multicrop import views

    if prefix.with_suffix(".npy").is_file() and prefix.with_suffix(".csv").is_file():
        return (np.load(prefix.with_suffix(".npy"), mmap_mode="r"),
                pd.read_csv(prefix.with_suffix(".csv"), dtype=str, keep_default_na=False))
    encoder, bottom, _ = split_network()
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    if "broken" in manifest:
        manifest = manifest[manifest.broken == ""]
    acts, rows, batch, meta = [], [], [], []
    t = time.perf_counter()

    def flush():
        x = np.stack(batch)
        a = np.asarray(bottom.predict_on_batch(x.reshape(-1, *x.shape[2:])))
        acts.append(a.reshape(len(x), VIEWS, *a.shape[1:]).astype(np.float16))
        rows.extend(meta)
        batch.clear()
        meta.clear()

    for k, r in enumerate(manifest.itertuples(index=False)):
        image = open_rgb(data / r.split / "images" / r.user_id / r.file, round(encoder.draft * 1.5))
        batch.append(np.stack([encoder.preprocess(v) for v in views(image, ("centre",), 2 / 3)]))
        meta.append((r.split, r.user_id, r.file, r.item))
        if len(batch) == 32:
            flush()
        if k % 2000 == 0:
            _log(f"  {data}: cached {k} of {len(manifest)} images ({time.perf_counter() - t:.0f} s)")
    if batch:
        flush()
    # each file written whole or not at all, the .csv last: a killed run leaves no cache that loads
    with atomic_path(prefix.with_suffix(".npy"), suffix=".npy") as tmp:
        np.save(tmp, np.concatenate(acts))
    atomic_write_text(prefix.with_suffix(".csv"),
                      pd.DataFrame(rows, columns=["split", "user_id", "file", "item"]).to_csv(index=False))
    return cache_activations(data, prefix)


class Run:
    """One dataset's cached activations, answer key, truth and probe scoring."""

    def __init__(self, data: Path, acts: np.ndarray, meta: pd.DataFrame, seed: int = 0):
        from data_prep.sample.generate import process_of
        from data_prep.sample.probe import InstanceProbe
        from data_prep.truth import read_truth

        self.data, self.acts, self.meta = data, acts, meta
        self.process = process_of(json.loads((data / "generator.json").read_text()))
        self.groups = InstanceProbe(self.process).groups(meta["item"])
        self.train = np.flatnonzero(meta.split == "train")
        self.test = np.flatnonzero(meta.split == "test")
        rng = np.random.default_rng(seed)
        users = np.unique(meta.user_id.values[self.train])
        held = set(rng.choice(users, len(users) // 5, replace=False))
        self.fit = self.train[[u not in held for u in meta.user_id.values[self.train]]]
        self.truth = {s: read_truth(data / s / "truth.txt") for s in ("train", "test")}
        self.bayes = read_truth(data / "bayes_rule_test.txt")

    def features(self, top, idx: np.ndarray, batch: int = 128) -> np.ndarray:
        out = []
        for s in range(0, len(idx), batch):
            a = np.asarray(self.acts[idx[s:s + batch]], np.float32)
            f = np.asarray(top(a.reshape(-1, *a.shape[2:]), training=False))
            out.append(f.reshape(len(a), VIEWS, -1).mean(axis=1))
        return np.concatenate(out)

    def probe(self, top, bootstrap: int = 0) -> tuple[dict, np.ndarray]:
        """The instance probe on ``top``'s features: (scores, every image's features)."""
        from core.labels import LABELS, TRAITS
        from data_prep.sample.probe import InstanceProbe
        from profiler import evaluation

        feats = self.features(top, np.arange(len(self.meta)))
        train, test = feats[self.train], feats[self.test]
        probe = InstanceProbe(self.process).fit(train, self.meta.item.values[self.train])
        ids, user = np.unique(self.meta.user_id.values[self.test], return_inverse=True)
        margins = probe.marginals(test, user, len(ids))
        table = pd.DataFrame({t: [LABELS[t][k] for k in margins[t].argmax(axis=1)] for t in TRAITS}, index=ids)
        truth = self.truth["test"]
        scores = evaluation.score(truth, table, bootstrap=bootstrap, seed=0)
        ceiling = evaluation.score(truth, self.bayes)
        out = {"image_acc": float((probe.model_.predict(test) == self.groups[self.test]).mean())}
        for t in TRAITS:
            r = scores["traits"][t]
            out[t] = {"F": r["F"], "ceiling": 100 * r["F"] / ceiling["traits"][t]["F"],
                      **({"ci95": r["ci95"]["F"]} if bootstrap else {})}
        return out, feats

    def user_labels(self, idx: np.ndarray) -> np.ndarray:
        """(n, traits) class indices of the users owning training images ``idx``."""
        from core.labels import LABELS, TRAITS

        truth = self.truth["train"]
        users = self.meta.user_id.values[idx]
        return np.stack([[LABELS[t].index(v) for v in truth.loc[users, t]] for t in TRAITS], axis=1)


def em_targets(run: Run, feats: np.ndarray) -> np.ndarray:
    """The training images' source responsibilities as the latent head's training finds them."""
    from profiler.encoders.adapted import source_targets

    return source_targets(feats, run.user_labels(run.train))


def adapt(run: Run, mode: str, *, epochs: int, lr: float, cycles: int,
          bootstrap: int) -> tuple[list[dict], object, np.ndarray | None]:
    """Train a fresh top in ``mode``; the probe's reading after every epoch, the top, and
    (oracle and em) every image's features through the final top, as the last probe read them."""
    import tensorflow as tf

    from core.labels import LABELS, TRAITS
    from profiler.backend import import_keras

    keras = import_keras()
    _, _, top = split_network()
    history = []
    if mode in ("oracle", "em"):
        from profiler.encoders.adapted import adapt_top

        feats, every = run.features(top, run.train), None
        for cycle in range(1 if mode == "oracle" else cycles):
            if mode == "oracle":
                targets = np.eye(int(run.groups.max()) + 1, dtype=np.float32)[run.groups[run.fit]]
            else:
                targets = em_targets(run, feats)[np.searchsorted(run.train, run.fit)]
            tag = f" cycle {cycle + 1}" if mode == "em" else ""

            def probed(epoch, loss, seconds, tag=tag):
                nonlocal feats, every
                last = epoch == epochs
                scores, every = run.probe(top, bootstrap=bootstrap if last else 0)
                feats = every[run.train]
                history.append({"epoch": len(history) + 1, "loss": loss, "train_s": seconds, **scores})
                _log(f"  {mode}{tag} epoch {epoch}: loss {loss:.3f}, probe image acc {scores['image_acc']:.3f}, "
                     "% ceiling " + " / ".join(f"{scores[t]['ceiling']:.0f}" for t in TRAITS))

            adapt_top(top, run.acts, targets, views=VIEWS, rows=run.fit, epochs=epochs, lr=lr,
                      batch=BATCH_IMAGES, seed=cycle, on_epoch=probed)
        return history, top, every

    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    base = run.features(top, run.fit)
    mu, sd = base.mean(0), base.std(0) + 1e-3
    dim = base.shape[1]

    def pooled(a):
        f = top(tf.reshape(a, (-1, *a.shape[2:])), training=True)
        return (tf.reduce_mean(tf.reshape(f, (-1, VIEWS, dim)), axis=1) - mu) / sd

    def fit(loss_of, heads, batches, tag):
        variables = top.trainable_variables + [v for h in heads for v in h.trainable_variables]
        opt = keras.optimizers.Adam(lr)

        @tf.function
        def step(*args):
            with tf.GradientTape() as tape:
                loss = loss_of(*args)
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        for epoch in range(epochs):
            t = time.perf_counter()
            losses = [float(step(*args)) for args in batches()]
            seconds = time.perf_counter() - t
            scores, _ = run.probe(top, bootstrap=bootstrap if epoch == epochs - 1 else 0)
            history.append({"epoch": len(history) + 1, "loss": float(np.mean(losses)), "train_s": seconds, **scores})
            _log(f"  {mode}{tag} epoch {epoch + 1}: loss {np.mean(losses):.3f}, probe image acc "
                 f"{scores['image_acc']:.3f}, % ceiling " + " / ".join(f"{scores[t]['ceiling']:.0f}" for t in TRAITS))

    # end to end from user labels: batches of users, each padded to the most images a user has
    users = sorted(set(run.meta.user_id.values[run.fit]))
    owned = {u: [] for u in users}
    for i in run.fit:
        owned[run.meta.user_id.values[i]].append(i)
    most = max(len(v) for v in owned.values())
    labels = run.user_labels(np.array([owned[u][0] for u in users]))
    heads = [keras.layers.Dense(len(LABELS[t])) for t in TRAITS]
    for h in heads:
        h.build((None, dim))

    def loss_of(a, mask, y):
        f = pooled(a)
        loss = 0.0
        for k, h in enumerate(heads):
            z = tf.reshape(h(f), (tf.shape(mask)[0], most, -1))
            if mode == "nb":
                user = tf.reduce_sum(tf.nn.log_softmax(z) * mask[:, :, None], axis=1)
            else:
                z = z * 4.0 + (mask[:, :, None] - 1.0) * 1e4
                user = (tf.reduce_logsumexp(z, axis=1) - tf.math.log(tf.reduce_sum(mask, 1, keepdims=True))) / 4.0
            loss += tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y[:, k], user))
        return loss

    def batches():
        order = rng.permutation(len(users))
        for s in range(0, len(order), USERS_PER_STEP):
            chosen = order[s:s + USERS_PER_STEP]
            index = np.zeros((len(chosen), most), int)
            mask = np.zeros((len(chosen), most), np.float32)
            for j, u in enumerate(chosen):
                mine = owned[users[u]]
                index[j], mask[j, :len(mine)] = mine[0], 1
                index[j, :len(mine)] = mine
            flat = index.ravel()
            order_ = np.argsort(flat)
            a = np.empty((len(flat), *run.acts.shape[1:]), np.float32)
            a[order_] = run.acts[flat[order_]]
            yield tf.constant(a), tf.constant(mask), tf.constant(labels[chosen])

    fit(loss_of, heads, batches, "")
    return history, top, None


def model_scores(run: Run, top, label: str, cache: Path, feats: np.ndarray) -> dict:
    """The default set model (latent pooling) trained and scored on ``top``'s features ``feats``
    (every image's, as ``Run.probe`` gives them), with the
    references, as ``bench/science.py`` reads them (95 % bootstrap intervals).

    The features are computed from the cached activations (float16) and put in an embedding
    store of the bench's own (``cache``/embeddings.sqlite) under the identity of an
    ``AdaptedEncoder`` of ``top``'s weights (saved as ``cache``/NAME-LABEL.npz), so training
    and prediction find every image there and the package's code path runs unchanged."""
    import tempfile

    from bench.science import evaluate
    from core.labels import TRAITS
    from profiler.embeddings import EmbeddingStore, content_digest
    from profiler.encoders.adapted import AdaptedEncoder, save_top

    encoder = AdaptedEncoder.from_file(save_top(top, cache / f"{run.data.name}-{label}.npz"))
    store_path = cache / "embeddings.sqlite"
    with EmbeddingStore(store_path) as store:
        paths = [run.data / r.split / "images" / r.user_id / r.file for r in run.meta.itertuples(index=False)]
        store.put(encoder.identity, {content_digest(path): v for path, v in zip(paths, feats)})
    with tempfile.TemporaryDirectory() as work:
        result = evaluate(run.data, ["latent"], store_path, Path(work), encoder=encoder)
    ceiling = result["scores"]["Bayes rule (ceiling)"]["traits"]
    out = {"encoder": encoder.identity, "timings": result["timings"]}
    for name, scores in result["scores"].items():
        out[name] = {t: {"F": scores["traits"][t]["F"], "ceiling": 100 * scores["traits"][t]["F"] / ceiling[t]["F"],
                         "ci95": scores["traits"][t].get("ci95", {}).get("F"),
                         "accuracy": scores["traits"][t].get("Acc")} for t in TRAITS}
    _log(f"  model on the {label} top: " + "; ".join(
        f"{name} " + " / ".join(f"{r[t]['ceiling']:.0f}" for t in TRAITS)
        for name, r in out.items() if name not in ("encoder", "timings")))
    return out


def render(runs: list[dict]) -> str:
    from tabulate import tabulate

    from core.labels import TRAITS

    parts = ["# Adapting the encoder's top: the instance probe before and after (`bench/adapt.py`)", ""]
    for run in runs:
        rows = []
        for mode, history in run["modes"].items():
            for h in history:
                row = {"mode": mode, "epoch": h["epoch"], "loss": f"{h['loss']:.3f}" if h["epoch"] else "",
                       "probe image acc": f"{h['image_acc']:.3f}"}
                for t in TRAITS:
                    ci = h[t].get("ci95")
                    row[f"{t} F"] = f"{h[t]['F']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                    row[f"{t} % ceiling"] = f"{h[t]['ceiling']:.0f}"
                rows.append(row)
        parts += [f"## {run['data']}: {run['images']['train']} training / {run['images']['test']} test images", "",
                  f"Measured on {run['machine']}; {run['epochs']} epochs a mode (a cycle; the em mode "
                  f"{run.get('cycles', 2)} cycles), learning rate "
                  f"{run['lr']}; seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in run["timings"].items()) + ".", "",
                  tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github", showindex=False), ""]
        if run.get("models"):
            rows = []
            for top, result in run["models"].items():
                for name, scores in result.items():
                    if name in ("encoder", "timings") or name.startswith("Bayes"):
                        continue
                    row = {"top": top, "reader": name}
                    for t in TRAITS:
                        ci = scores[t].get("ci95")
                        row[f"{t} F"] = f"{scores[t]['F']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                        row[f"{t} % ceiling"] = f"{scores[t]['ceiling']:.0f}"
                    rows.append(row)
            parts += ["The default set model (latent pooling) trained on each top's features, beside the "
                      "references on the same features (`--model`; the item oracle does not read features):", "",
                      tabulate(pd.DataFrame(rows), headers="keys", tablefmt="github", showindex=False), ""]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", type=Path, help="sample dataset folders")
    parser.add_argument("--modes", default="oracle,em,nb,lse", help="comma-separated: oracle, em, nb, lse")
    parser.add_argument("--epochs", type=int, default=3, help="epochs a mode (a cycle of the em mode)")
    parser.add_argument("--cycles", type=int, default=2, help="EM refits of the em mode")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam's learning rate")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench/adapt"),
                        help="folder of the cached activations (one .npy and .csv per dataset)")
    parser.add_argument("--out", type=Path, default=Path("results/adapt.md"))
    parser.add_argument("--model", action="store_true",
                        help="also train and score the default set model on the frozen top's features and on "
                             "those of each oracle or em mode's final top")
    parser.add_argument("--update", action="store_true",
                        help="keep the other datasets' runs already in --out's .json (a dataset run again is replaced)")
    args = parser.parse_args()
    unknown = sorted(set(args.modes.split(",")) - set(MODES))
    if unknown:  # an unknown name would otherwise train as the last end-to-end mode under its own label
        parser.error(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    from core.io import atomic_write_text

    m = machine()
    kept = json.loads(args.out.with_suffix(".json").read_text()) if args.update and args.out.with_suffix(".json").is_file() else []
    kept = [run for run in kept if run["data"] not in {str(d) for d in args.data}]
    runs = []
    for data in args.data:
        t = time.perf_counter()
        acts, meta = cache_activations(data, args.cache / data.name)
        timings = {"cache_s": time.perf_counter() - t}
        run = Run(data, acts, meta)
        _, _, top = split_network()
        frozen, every = run.probe(top, bootstrap=1000)
        modes = {"frozen": [{"epoch": 0, "loss": 0.0, **frozen}]}
        models = {"frozen": model_scores(run, top, "frozen", args.cache, every)} if args.model else {}
        for mode in args.modes.split(","):
            t = time.perf_counter()
            modes[mode], top, every = adapt(run, mode, epochs=args.epochs, lr=args.lr, cycles=args.cycles,
                                            bootstrap=1000)
            timings[f"{mode}_s"] = time.perf_counter() - t
            if args.model and mode in ("oracle", "em"):
                models[mode] = model_scores(run, top, mode, args.cache, every)
        runs.append({"data": str(data), "machine": f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('features')}",
                     "cycles": args.cycles,
                     "images": {"train": int(len(run.train)), "test": int(len(run.test))},
                     "epochs": args.epochs, "lr": args.lr, "timings": timings, "modes": modes,
                     **({"models": models} if models else {})})
        atomic_write_text(args.out.with_suffix(".json"), json.dumps(kept + runs, indent=1))
        atomic_write_text(args.out, render(kept + runs))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
