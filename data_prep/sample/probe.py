"""The instance-probe reference: the limit of an encoder's *features* on the sample data.

The Bayes rule knows which item each image shows. This reference knows less: it reads
each image's embedding (from whatever encoder a model uses) through a linear probe
trained on the training images with the answer key's per-image labels, and combines the
probe's beliefs per user with the generator's exact emission probabilities, as the
Bayes rule does. So it separates the two gaps a model has to the ceiling: what it misses
of the ceiling is what the features cost; what a model misses beyond it is what the
model's *learning* costs (it sees only user labels, never which image is telling).

What the probe predicts is an image's *group*: items whose emission probabilities are
equal for every label combination (the items of one pool, the items shared by the same
two pools, all noise items) are interchangeable for the Bayes rule, so the group is
exactly what it needs to know. With ``q(g | image)`` from the probe and the training
frequency ``pi(g)`` of each group, an image's likelihood under a combination ``c`` is
``sum_g q(g | image) / pi(g) * E[c, g]`` (``E[c, g]``: the emission mass of group ``g``),
and a user's posterior over combinations is the prior times the product over its images.

This module works on arrays (embeddings in, labels out); it imports nothing from
``profiler``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.errors import DataError
from core.labels import LABELS, TRAITS
from data_prep.sample.process import Process

NAME = "Instance-probe reference"


def item_groups(process: Process) -> tuple[np.ndarray, np.ndarray]:
    """``(group of each item, emission mass per combination and group)``.

    Items are grouped by their emission column (exactly equal probabilities under every
    label combination); items never emitted share a group of their own.
    """
    columns = np.round(process.emission.T, 12)
    _, group = np.unique(columns, axis=0, return_inverse=True)
    group = np.asarray(group).ravel()
    mass = np.zeros((process.emission.shape[0], group.max() + 1))
    np.add.at(mass.T, group, process.emission.T)
    return group, mass


class InstanceProbe:
    """A linear probe from an image embedding to its item group, combined per user by Bayes' rule."""

    def __init__(self, process: Process, *, c: float = 0.1, max_iter: int = 300, seed: int = 0):
        self.process = process
        self.c = c
        self.max_iter = max_iter
        self.seed = seed
        self.group_of_item, self.mass = item_groups(process)
        self._index = {name: i for i, name in enumerate(process.items)}

    def groups(self, items) -> np.ndarray:
        """The group of each item name (``KeyError`` for a name the process does not know)."""
        return self.group_of_item[[self._index[name] for name in items]]

    def fit(self, vectors: np.ndarray, items) -> "InstanceProbe":
        """Fit on training image embeddings ``vectors`` (n, dim) showing ``items`` (n names)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        y = self.groups(items)
        self.classes_ = np.unique(y)
        self.frequency_ = np.bincount(y, minlength=self.mass.shape[1])[self.classes_] / len(y)
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(
            C=self.c, max_iter=self.max_iter, random_state=self.seed))
        self.model_.fit(vectors, y)
        return self

    def image_likelihoods(self, vectors: np.ndarray) -> np.ndarray:
        """(n, combinations): each image's likelihood under each label combination, up to a factor."""
        q = self.model_.predict_proba(vectors) / self.frequency_
        return q @ self.mass[:, self.classes_].T

    def marginals(self, vectors: np.ndarray, user: np.ndarray, n_users: int) -> dict[str, np.ndarray]:
        """Per-trait class probabilities of ``n_users`` users; ``user[i]`` owns image ``i``."""
        log_like = np.log(np.maximum(self.image_likelihoods(vectors), 1e-300))
        log_post = np.tile(np.log(self.process.prior), (n_users, 1))
        np.add.at(log_post, user, log_like)
        log_post -= log_post.max(axis=1, keepdims=True)
        post = np.exp(log_post)
        post /= post.sum(axis=1, keepdims=True)
        return self.process.marginals(post)

    def predict(self, vectors: np.ndarray, user: np.ndarray, n_users: int) -> dict[str, list[str]]:
        """The most probable class per trait of each user, as label names."""
        margins = self.marginals(vectors, user, n_users)
        return {t: [LABELS[t][k] for k in margins[t].argmax(axis=1)] for t in TRAITS}


def probe_submission(data: str | Path, train, test, out: str | Path, *, c: float = 0.1) -> Path:
    """Write the instance-probe reference's predictions for the test users to ``out``.

    ``train`` and ``test`` are a split's embeddings as the set model sees them: objects
    with ``vectors`` (images, dim), ``files`` (each row's file name), ``user_ids`` and
    ``image_users()`` (each row's user position), as ``profiler.embeddings.EmbeddedData``
    has them. ``data`` is the sample data folder, whose ``manifest.csv`` says which item
    each file shows and whose ``generator.json`` gives the process.
    """
    import pandas as pd

    from data_prep.sample.generate import process_of
    from data_prep.truth import write_label_file

    data = Path(data)
    if not (data / "manifest.csv").is_file() or not (data / "generator.json").is_file():
        raise DataError(f"{data}: no manifest.csv or generator.json; the instance-probe reference "
                        "needs sample data from 'profiler sample-data'")
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    item = {(r.split, r.user_id, r.file): r.item for r in manifest.itertuples(index=False)}

    def items(split: str, embedded) -> list[str]:
        users = embedded.image_users()
        return [item[(split, embedded.user_ids[u], name)] for u, name in zip(users, embedded.files)]

    process = process_of(json.loads((data / "generator.json").read_text(encoding="utf-8")))
    probe = InstanceProbe(process, c=c).fit(train.vectors, items("train", train))
    predicted = probe.predict(test.vectors, test.image_users(), len(test.user_ids))
    write_label_file(pd.DataFrame({"user_id": list(test.user_ids), **predicted}), out, fmt="txt")
    return Path(out)
