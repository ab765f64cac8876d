"""How unlike the training data a user is: the distance of its items from the training items' subspace.

Each family says what a user's *items* are (``Family.ood_items``): the set model's are the
user's image embeddings, a 3D CNN's the one vector its trunk pools the volume into. At the
end of training (``fit``) the training items, normalised to unit length, give their mean
and their ``DIMS`` principal axes (from up to ``KEEP`` of them). An item's distance is the
length of what is left of it (normalised, less the mean) off those axes, the PCA
reconstruction error: images like the training images lie near the subspace their
embeddings span; a solid colour, noise or a photograph of another kind does not. A
user's score is the mean over its items. (Tried first on the sample data: the cosine
distance to the nearest of 2,048 training items within those axes, which ranked solid
colours among the clip art: ROC-AUC 0.97 for them, 0.99 in all, against 1.00 for the
residual. ``make demo`` reports the check for each model: ``results/ood.json``.)

The validation users' scores are recorded too, so a score reads as a rank (``rank``:
the share of validation users with a lower score), and ``--decide ...,ood=Q`` abstains
on users more unusual than a share Q of the validation users.

The record (``check_record`` bounds what a model file may claim) is plain JSON in the
model's config, as the temperatures and the decision record are.
"""
from __future__ import annotations

import numpy as np

#: training items the axes are fitted on, and how many axes
KEEP = 4096
DIMS = 32
#: the most validation scores and the widest item a model file may claim
MAX_ITEMS = 200_000
MAX_DIM = 65_536


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def fit(train_items: np.ndarray, validation_items: list[np.ndarray], *, seed: int = 0) -> dict:
    """The record from the training items (rows) and each validation user's items."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    rows = _unit(train_items)
    if len(rows) > KEEP:
        rows = rows[np.sort(rng.choice(len(rows), KEEP, replace=False))]
    dims = int(min(DIMS, rows.shape[0] - 1, rows.shape[1] - 1))
    pca = PCA(max(dims, 1), random_state=seed).fit(rows)
    record = {"mean": pca.mean_.round(6).tolist(), "axes": pca.components_.round(6).tolist(), "validation": []}
    record["validation"] = sorted(round(float(s), 6) for s in scores(record, validation_items)
                                  if np.isfinite(s))
    return record


class Scorer:
    """A record's arrays, ready to score users."""

    def __init__(self, record: dict):
        self.mean = np.asarray(record["mean"], np.float64)
        self.axes = np.asarray(record["axes"], np.float64)
        self.validation = np.asarray(record["validation"], np.float64)

    def score(self, items: np.ndarray) -> float:
        """One user's score from its items (rows); NaN for none."""
        if not len(items):
            return float("nan")
        centred = _unit(items) - self.mean
        residual = centred - (centred @ self.axes.T) @ self.axes
        return float(np.mean(np.linalg.norm(residual, axis=1)))

    def rank(self, score: float) -> float:
        """The share of validation users with a lower score."""
        if not len(self.validation) or not np.isfinite(score):
            return float("nan")
        return float(np.searchsorted(self.validation, score, side="left") / len(self.validation))

    def threshold(self, share: float) -> float:
        """The score above which a user is more unusual than ``share`` of the validation users."""
        return float(np.quantile(self.validation, share)) if len(self.validation) else float("inf")


def scores(record: dict, users_items: list[np.ndarray]) -> np.ndarray:
    """Each user's score (``users_items``: one array of item rows per user)."""
    scorer = Scorer(record)
    return np.array([scorer.score(items) for items in users_items])


def check_record(record: dict | None) -> None:
    """Raise ``ValueError`` unless ``record`` (from a model file) is well formed and in bounds."""
    if record is None:
        return
    if not isinstance(record, dict) or set(record) != {"mean", "axes", "validation"}:
        raise ValueError("ood must hold mean, axes and validation")
    if not isinstance(record["mean"], list) or not 0 < len(record["mean"]) <= MAX_DIM:
        raise ValueError(f"ood: mean must be a list of 1 to {MAX_DIM:,} numbers")
    if not isinstance(record["axes"], list) or not 0 < len(record["axes"]) <= DIMS \
            or any(not isinstance(row, list) or len(row) != len(record["mean"]) for row in record["axes"]):
        raise ValueError(f"ood: axes must be 1 to {DIMS} rows as long as the mean")
    if not isinstance(record["validation"], list) or len(record["validation"]) > MAX_ITEMS:
        raise ValueError(f"ood: validation must be a list of at most {MAX_ITEMS:,} scores")
    try:
        arrays = [np.asarray(record[key], np.float64) for key in ("mean", "axes", "validation")]
    except (TypeError, ValueError):
        raise ValueError("ood: the record must hold numbers only") from None
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("ood: the record must hold finite numbers only")


def check(known: np.ndarray, unusual: dict[str, np.ndarray], validation, shares=(0.95, 0.99)) -> dict:
    """How well the score tells ``known`` users (a test split like the training data) from
    ``unusual`` ones (by kind): ROC-AUC over all of them and per kind, and at each share Q of
    ``--decide ...,ood=Q`` the share of each group that would abstain. Users without a score
    (NaN: nothing usable) are left out."""
    from sklearn.metrics import roc_auc_score

    known = np.asarray(known, np.float64)
    known = known[np.isfinite(known)]
    unusual = {kind: np.asarray(v, np.float64)[np.isfinite(v)] for kind, v in unusual.items()}
    every = np.concatenate(list(unusual.values()))

    def auc(other):
        return float(roc_auc_score(np.r_[np.zeros(len(known)), np.ones(len(other))], np.r_[known, other]))

    scorer = Scorer({"mean": [0.0], "axes": [[0.0]], "validation": sorted(validation)})
    return {"known_users": len(known), "unusual_users": {k: len(v) for k, v in unusual.items()},
            "roc_auc": auc(every), "roc_auc_per_kind": {k: auc(v) for k, v in unusual.items()},
            "abstain": {f"{q:g}": {"known": float(np.mean(known > scorer.threshold(q))),
                                   "unusual": float(np.mean(every > scorer.threshold(q)))} for q in shares}}
