"""A learnability reference for the sample data: a perfect encoder, a learned head.

The Bayes rule (``bayes_rule_*.txt``) knows the generator's probabilities; no model
trained on a few hundred users can learn them exactly. This reference separates the two
gaps a trained model has to that ceiling. It reads the answer key (``manifest.csv``:
which emoji each image shows) as if an encoder recognised every image perfectly, and
learns the emoji-to-label association from the training split alone with a logistic
regression per trait over each user's bag of emoji (class-balanced, as the models'
losses are). What it misses of the ceiling is what the training data size costs; what
a model misses beyond it is what its encoder and head cost.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from data_prep.dataset import load_dataset
from core.errors import DataError
from core.labels import TRAITS
from data_prep.truth import write_label_file

NAME = "Item oracle + logistic regression"


def _bags(manifest: pd.DataFrame, split: str, user_ids: list[str]) -> list[str]:
    readable = manifest[(manifest["split"] == split) & (manifest["broken"] == "")]
    bags = readable.groupby("user_id")["item"].apply(" ".join).to_dict()
    return [bags.get(uid, "") for uid in user_ids]


def oracle_submission(data: str | Path, out: str | Path, *, split: str = "test") -> Path:
    """Write the item oracle's predictions for ``split`` of the sample data at ``data``."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    data = Path(data)
    if not (data / "manifest.csv").is_file():
        raise DataError(f"{data}: no manifest.csv; the item oracle needs sample data from "
                        "'profiler sample-data'")
    manifest = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    train = load_dataset(data / "train").users
    test = load_dataset(data / split).users
    vectorizer = CountVectorizer(token_pattern=r"\S+", lowercase=False)
    x_train = vectorizer.fit_transform(_bags(manifest, "train", [u.user_id for u in train]))
    x_test = vectorizer.transform(_bags(manifest, split, [u.user_id for u in test]))
    predictions = pd.DataFrame({"user_id": [u.user_id for u in test]})
    for trait in TRAITS:
        model = LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced")
        model.fit(x_train, [u.labels[trait] for u in train])
        predictions[trait] = model.predict(x_test)
    write_label_file(predictions, out, fmt="txt")
    return Path(out)
