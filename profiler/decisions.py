"""From calibrated probabilities to a label: the decision rules of ``profiler predict --decide``.

- ``argmax``: the most probable class. It maximises the expected accuracy.
- ``balanced``: the class whose probability is highest relative to its share of the
  training users (``p(c) / prior(c)``). It evens out the classes, as the shared task's
  macro-F asks; rare classes get predicted more often.
- ``macro`` (the default): between the two, ``p(c) / prior(c) ** a``, with ``a`` per trait
  from 0 (``argmax``) to 1 (``balanced``) in steps of 0.1, the one whose macro-F is highest
  on the validation split (``macro_exponent``). ``balanced`` maximises macro-F only in the
  limit of a well-separated, calibrated model; a head that is unsure between a common and a
  rare class gives the rare one away too often under it (at the paper's size the
  validation split chose 0 for location and occupation).
- ``precision=P``: a class is predicted only when its probability clears a per-class
  threshold, fitted on the validation split so that, among validation users over it, a
  share of at least P truly are of that class. Among the classes cleared the most probable
  wins; a user who clears none gets ``unknown``: an abstention, which ``profiler score``
  counts as such. A class that reaches precision P at no threshold is never predicted.
- ``,ood=Q`` after any rule (or alone, with the default rule): a user more unusual than a
  share Q of the validation users (``profiler.ood``) gets ``unknown`` on every trait.

The probabilities are posteriors under the training users' class shares: a model trained
with "balanced" class weights (the default) has its outputs shifted back to them
(``profiler.calibration``). (A model saved by an earlier version, whose outputs are not
shifted, is still balanced: for it ``balanced`` is its own most probable class and
``argmax`` multiplies by the priors back, ``p(c) * prior(c)``.) The default rule is
``macro`` for a model with a record; a model without one (``calibrate=false``, an
older version) can only use its own most probable class (``argmax``).

Training stores what the rules need in the model file (``decisions``): the training
users' class shares, how training weighed the classes, and the validation users'
calibrated probabilities and labels, so thresholds for any P are fitted when asked, the
same way every time.
"""
from __future__ import annotations

import re

import numpy as np

from core.errors import ConfigError
from core.labels import ABSTAIN, TRAITS
#: the most validation users a model file may record (bounds what a hostile file can claim)
MAX_RECORDED = 200_000


def parse_decide(text: str) -> tuple[str, float | None]:
    """``argmax``, ``balanced``, ``macro`` or ``precision=P`` (0 < P < 1) as ``(rule, P)``."""
    text = text.strip()
    if text in ("argmax", "balanced", "macro"):
        return text, None
    found = re.fullmatch(r"precision=([0-9]*\.?[0-9]+)", text)
    if found and 0 < float(found.group(1)) < 1:
        return "precision", float(found.group(1))
    raise ConfigError(f"--decide must be argmax, balanced, macro or precision=P with 0 < P < 1 (e.g. "
                      f"precision=0.9), not {text[:60]!r}")


def split_ood(text: str) -> tuple[str | None, float | None]:
    """``RULE,ood=Q`` (or ``ood=Q`` alone) as ``(RULE or None, Q)``; ``(text, None)`` without it."""
    parts = [part.strip() for part in text.split(",")]
    share = [part for part in parts if part.startswith("ood=")]
    rest = [part for part in parts if not part.startswith("ood=")]
    if not share:
        return text, None
    found = re.fullmatch(r"ood=([0-9]*\.?[0-9]+)", share[0])
    if len(share) > 1 or len(rest) > 1 or not found or not 0 < float(found.group(1)) < 1:
        raise ConfigError(f"--decide: give one rule and at most one ood=Q with 0 < Q < 1 (e.g. "
                          f"balanced,ood=0.99), not {text[:60]!r}")
    return (rest[0] if rest else None), float(found.group(1))


def class_shares(train_labels: np.ndarray, k: int) -> np.ndarray:
    """Each class's share of the training users, add-one smoothed (never 0)."""
    counts = np.bincount(np.asarray(train_labels, np.int64), minlength=k).astype(float)
    return ((counts + 1) / (counts.sum() + k)).round(6)


def record(probabilities: dict[str, np.ndarray], truth: dict[str, np.ndarray],
           train_labels: dict[str, np.ndarray], labels: dict, class_weight: str = "none",
           shifted: bool = False) -> dict:
    """What a model stores for its decision rules (``check_record`` reads it back);
    ``class_weight``: how training weighed the classes ("balanced" or "none"); ``shifted``:
    whether prediction shifts the model's outputs back to the training shares (``profiler.calibration``)."""
    out = {"priors": {}, "validation": {}, "class_weight": class_weight, "shifted": shifted}
    for t in TRAITS:
        k = len(labels[t])
        out["priors"][t] = class_shares(train_labels[t], k).tolist()
        out["validation"][t] = {"labels": np.asarray(truth[t], np.int64).tolist(),
                                "probabilities": np.asarray(probabilities[t], np.float64).round(6).tolist()}
    return out


def check_record(decisions: dict | None, labels: dict) -> None:
    """Raise ``ValueError`` unless ``decisions`` (from a model file) is well formed and in bounds."""
    if decisions is None:
        return
    if not isinstance(decisions, dict) or not {"priors", "validation"} <= set(decisions) \
            <= {"priors", "validation", "class_weight", "shifted"} \
            or decisions.get("class_weight", "none") not in ("balanced", "none") \
            or not isinstance(decisions.get("shifted", False), bool):
        raise ValueError("decisions must hold priors, validation and a class_weight of balanced or none")
    for t in TRAITS:
        k = len(labels[t])
        priors = np.asarray(decisions["priors"].get(t), dtype=float)
        if priors.shape != (k,) or not np.all(np.isfinite(priors)) or not np.all(priors > 0):
            raise ValueError(f"decisions: the {t} priors must be {k} positive numbers")
        entry = decisions["validation"].get(t)
        if not isinstance(entry, dict) or not isinstance(entry.get("labels"), list) \
                or not isinstance(entry.get("probabilities"), list) \
                or len(entry["labels"]) != len(entry["probabilities"]) or len(entry["labels"]) > MAX_RECORDED:
            raise ValueError(f"decisions: the {t} validation record must be up to {MAX_RECORDED:,} "
                             "labels with their probabilities")
        if entry["labels"]:
            y = np.asarray(entry["labels"])
            p = np.asarray(entry["probabilities"], dtype=float)
            if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= k or p.shape != (len(y), k) \
                    or not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
                raise ValueError(f"decisions: the {t} validation record has labels outside 0..{k - 1} "
                                 f"or probabilities that are not {k} numbers in [0, 1]")


def thresholds(probabilities: np.ndarray, truth: np.ndarray, precision: float) -> np.ndarray:
    """Per class, the lowest probability at which the validation users over it are at least
    ``precision`` of that class (inf where no threshold reaches it)."""
    from sklearn.metrics import precision_recall_curve

    k = probabilities.shape[1]
    out = np.full(k, np.inf)
    for c in range(k):
        positive = truth == c
        if not positive.any():
            continue
        reached, _, cuts = precision_recall_curve(positive, probabilities[:, c])
        ok = np.flatnonzero(reached[:-1] >= precision)  # the last point has no threshold
        if len(ok):
            out[c] = float(cuts[ok[0]])
    return out


#: the exponents ``a`` of the training shares that the ``macro`` rule chooses among (1: balanced)
MACRO_EXPONENTS = tuple(round(0.1 * i, 1) for i in range(10, -1, -1))


def macro_exponent(probabilities: np.ndarray, truth: np.ndarray, priors: np.ndarray, trait: str) -> float:
    """The exponent ``a`` (of ``MACRO_EXPONENTS``, 0 to 1) for which ``argmax(p / priors ** a)``
    has the highest macro-F of ``trait`` on the validation users (``probabilities`` (n, k),
    ``truth`` (n,)), as scoring and early stopping measure it (``core.metrics.trait_scores``).
    Ties, and no users, keep the larger ``a`` (1: the ``balanced`` rule)."""
    from core.metrics import trait_scores

    if not len(truth):
        return 1.0
    logp, logprior = np.log(np.maximum(probabilities, 1e-12)), np.log(priors)
    scores = [trait_scores(truth, np.argmax(logp - a * logprior, axis=1), trait)["F"] for a in MACRO_EXPONENTS]
    return float(MACRO_EXPONENTS[int(np.argmax(np.round(scores, 12)))])


class Decider:
    """Applies one rule to calibrated probabilities; ``info`` (``model_info``) holds the model's record."""

    def __init__(self, decide: str | None, info: dict, *, name: str = "model"):
        decisions = info.get("decisions")
        rule, self.ood_share = split_ood(decide) if decide else (None, None)
        decide = rule or ("macro" if decisions else "argmax")
        self.text = decide + (f",ood={self.ood_share:g}" if self.ood_share else "")
        self.rule, self.precision = parse_decide(decide)
        self.ood_cut = None
        if self.ood_share:
            if not info.get("ood"):
                raise ConfigError(f"{name}: --decide ood={self.ood_share:g} needs the out-of-distribution "
                                  "record that training stores with the calibration, and this model has "
                                  "none (trained with calibrate=false, or by an older version); retrain")
            from profiler.ood import Scorer

            self.ood_cut = Scorer(info["ood"]).threshold(self.ood_share)
        self.labels = info["labels"]
        # outputs still balanced: a class-weighted model whose outputs prediction does not shift back
        self.weighted = bool(decisions) and decisions.get("class_weight") == "balanced" \
            and not decisions.get("shifted")
        if self.rule != "argmax" and not decisions:
            raise ConfigError(f"{name}: --decide {decide} needs the validation record that training stores "
                              "with the calibration, and this model has none (trained with calibrate=false, "
                              "or by an older version); use --decide argmax or retrain")
        self.priors = {t: np.asarray(decisions["priors"][t]) for t in TRAITS} if decisions else None
        self.cuts = self.exponents = None
        if self.rule == "macro":
            self.exponents = {}
            for t in TRAITS:  # a class-weighted model's balanced outputs multiplied back by the shares
                p, truth = self._validation(decisions, t)
                self.exponents[t] = macro_exponent(p * self.priors[t] if self.weighted else p, truth, self.priors[t], t)
        if self.rule == "precision":
            self.cuts = {t: thresholds(*self._validation(decisions, t), self.precision) for t in TRAITS}

    def _validation(self, decisions: dict, trait: str) -> tuple[np.ndarray, np.ndarray]:
        """The validation users' probabilities (as the model outputs them) and labels of ``trait``."""
        entry = decisions["validation"][trait]
        p = np.asarray(entry["probabilities"], float).reshape(-1, len(self.labels[trait]))
        return p, np.asarray(entry["labels"], np.int64)

    def label(self, trait: str, p: np.ndarray) -> str:
        """The decided label for one user's probability vector ``p`` of ``trait``."""
        if self.rule == "argmax":
            return self.labels[trait][int(np.argmax(p * self.priors[trait] if self.weighted else p))]
        if self.rule == "balanced":
            return self.labels[trait][int(np.argmax(p if self.weighted else p / self.priors[trait]))]
        if self.rule == "macro":
            q = p * self.priors[trait] if self.weighted else p
            return self.labels[trait][int(np.argmax(q / self.priors[trait] ** self.exponents[trait]))]
        cleared = p >= self.cuts[trait]
        if not cleared.any():
            return ABSTAIN
        return self.labels[trait][int(np.argmax(np.where(cleared, p, -1.0)))]

    def abstains(self, ood_score: float | None) -> bool:
        """Whether a user with this out-of-distribution score gets ``unknown`` on every trait
        (``ood=Q``: more unusual than a share Q of the validation users)."""
        return self.ood_cut is not None and ood_score is not None and ood_score > self.ood_cut

    def describe(self) -> dict:
        """The rule and, for ``precision=P``, the thresholds used (None: the class is never
        predicted); for ``macro``, each trait's exponent of the training shares (0: argmax, 1: balanced)."""
        out = {"rule": self.text}
        if self.exponents is not None:
            out["exponents"] = dict(self.exponents)
        if self.cuts is not None:
            out["thresholds"] = {t: {c: (None if not np.isfinite(v) else round(float(v), 6))
                                     for c, v in zip(self.labels[t], self.cuts[t])} for t in TRAITS}
        if self.ood_cut is not None:
            out["ood_threshold"] = round(self.ood_cut, 6)
        return out
