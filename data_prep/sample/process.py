"""The generative process of the sample data, and the exact Bayes rule for it.

A user's labels (gender, location, occupation) are drawn independently from skewed
priors. Each of its images shows one *subject* item drawn from the emission table
``E[combo, item]`` of the user's label combination (2 x 6 x 8 = 96 combos):

- with probability ``1 - signal`` a noise item (the same distribution for everyone);
- otherwise a signal item for one trait, chosen with ``trait_weights``: for gender an
  item of the gender pool; for location an item of the region's pool; for occupation,
  with probability ``people_share``, a person of the user's gender doing the job
  (``female-doctor``: gender and occupation at once), else an object of the job.

Items within a pool are equally likely; an item in two pools is ambiguous between them.
Distractors and backgrounds are noise items only, and broken files show nothing, so a
perfect reader's posterior over the 96 combos is exactly
``prior(combo) * prod_i E[combo, item_i]`` over the user's readable images. The Bayes
rule predicts each trait's most probable class under that posterior (marginalised over
the other traits); its accuracy and macro-F are the ceiling reported for the data.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np

from core.labels import LABELS, TRAITS
from data_prep.sample.catalog import Pools

PRIORS = {
    "gender": {"female": 0.48, "male": 0.52},
    "location": {"center": 0.38, "southeast": 0.12, "northwest": 0.12, "north": 0.08,
                 "northeast": 0.18, "west": 0.12},
    "occupation": {"others": 0.05, "arts": 0.09, "student": 0.35, "social": 0.24,
                   "sciences": 0.08, "sports": 0.03, "administrative": 0.11, "health": 0.05},
}
COMBOS: list[tuple[str, str, str]] = list(itertools.product(*(LABELS[t] for t in TRAITS)))


@dataclass(frozen=True)
class ProcessConfig:
    """Parameters of the generative process (all recorded in ``generator.json``)."""

    signal: float = 0.3
    trait_weights: tuple[float, float, float] = (0.25, 0.4, 0.35)  # gender, location, occupation
    people_share: float = 0.4
    p: int = 11
    fewer_share: float = 0.12  # users with 1..p-1 images
    more_share: float = 0.06  # users with p+1..p+5 images
    broken_share: float = 0.015  # files truncated, empty or not an image
    priors: dict = field(default_factory=lambda: {t: dict(v) for t, v in PRIORS.items()})

    def __post_init__(self):
        if not 0 <= self.signal <= 1:
            raise ValueError(f"signal must be between 0 and 1, not {self.signal}")
        if abs(sum(self.trait_weights) - 1) > 1e-9:
            raise ValueError(f"trait_weights must sum to 1, not {sum(self.trait_weights)}")
        for trait in TRAITS:
            if set(self.priors[trait]) != set(LABELS[trait]) or abs(sum(self.priors[trait].values()) - 1) > 1e-9:
                raise ValueError(f"priors for {trait} must cover {LABELS[trait]} and sum to 1")

    def as_json(self) -> dict:
        return {**asdict(self), "trait_weights": list(self.trait_weights)}


class Process:
    """The emission table over a fixed item vocabulary, with sampling and the Bayes rule."""

    def __init__(self, items: list[str], pools: Pools, config: ProcessConfig = ProcessConfig()):
        self.items = list(items)
        self.config = config
        index = {name: i for i, name in enumerate(self.items)}
        v = len(self.items)

        def uniform(names) -> np.ndarray:
            row = np.zeros(v)
            row[[index[n] for n in names]] = 1.0 / len(names)
            return row

        noise = uniform(pools.noise)
        wg, wl, wo = config.trait_weights
        q = config.people_share
        self.emission = np.zeros((len(COMBOS), v))
        for c, (g, l, o) in enumerate(COMBOS):
            signal = (wg * uniform(pools.gender[g]) + wl * uniform(pools.location[l])
                      + wo * (q * uniform(pools.occupation_people[(g, o)])
                              + (1 - q) * uniform(pools.occupation_objects[o])))
            self.emission[c] = (1 - config.signal) * noise + config.signal * signal
        self.noise = noise
        self.prior = np.array([config.priors["gender"][g] * config.priors["location"][l]
                               * config.priors["occupation"][o] for g, l, o in COMBOS])
        with np.errstate(divide="ignore"):
            self.log_emission = np.log(self.emission)
        self._cum = np.cumsum(self.emission, axis=1)

    # --- sampling --------------------------------------------------------------------

    def sample_user(self, rng: np.random.Generator) -> dict:
        """Labels, image count, subject items and which files break, for one user."""
        cfg = self.config
        combo = int(rng.choice(len(COMBOS), p=self.prior))
        draw = rng.random()
        if draw < cfg.fewer_share:
            n = int(rng.integers(1, cfg.p))
        elif draw < cfg.fewer_share + cfg.more_share:
            n = int(rng.integers(cfg.p + 1, cfg.p + 6))
        else:
            n = cfg.p
        items = np.minimum(np.searchsorted(self._cum[combo], rng.random(n), side="right"),
                           len(self.items) - 1)
        broken = rng.random(n) < cfg.broken_share
        return {"combo": combo, "labels": dict(zip(TRAITS, COMBOS[combo])),
                "items": items.tolist(), "broken": broken.tolist()}

    def sample_noise(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Noise items (distractors and backgrounds): label-independent by construction."""
        return rng.choice(len(self.items), size=size, p=self.noise)

    # --- the Bayes rule --------------------------------------------------------------

    def posterior(self, users: list[list[int]]) -> np.ndarray:
        """Posterior over the 96 combos for each user, given its readable items."""
        log_prior = np.log(self.prior)
        out = np.empty((len(users), len(COMBOS)))
        for u, items in enumerate(users):
            ll = log_prior + self.log_emission[:, items].sum(axis=1)
            ll -= ll.max()
            w = np.exp(ll)
            out[u] = w / w.sum()
        return out

    @staticmethod
    def marginals(posterior: np.ndarray) -> dict[str, np.ndarray]:
        """Per-trait class probabilities (users x classes) from combo posteriors."""
        shape = (len(posterior),) + tuple(len(LABELS[t]) for t in TRAITS)
        joint = posterior.reshape(shape)
        return {"gender": joint.sum(axis=(2, 3)), "location": joint.sum(axis=(1, 3)),
                "occupation": joint.sum(axis=(1, 2))}

    def bayes_predictions(self, users: list[dict]) -> dict[str, list[str]]:
        """The Bayes rule's predicted label per trait for each user (readable images only)."""
        readable = [[i for i, b in zip(u["items"], u["broken"]) if not b] for u in users]
        margins = self.marginals(self.posterior(readable))
        return {t: [LABELS[t][k] for k in margins[t].argmax(axis=1)] for t in TRAITS}

    def bayes_scores(self, users: list[dict]) -> dict:
        """The Bayes rule's accuracy and macro-F per trait on these users (readable images only).

        Also the *expected* accuracy (mean of the top posterior), a lower-variance
        estimate of the same ceiling.
        """
        from core.metrics import trait_scores

        readable = [[i for i, b in zip(u["items"], u["broken"]) if not b] for u in users]
        margins = self.marginals(self.posterior(readable))
        out = {}
        for trait in TRAITS:
            truth = np.array([LABELS[trait].index(u["labels"][trait]) for u in users])
            pred = margins[trait].argmax(axis=1)
            scores = trait_scores(truth, pred, trait)
            out[trait] = {"accuracy": scores["Acc"], "macro_f": scores["F"],
                          "expected_accuracy": float(margins[trait].max(axis=1).mean())}
        return out

    def monte_carlo_ceiling(self, users: int = 20000, seed: int = 12345) -> dict:
        """The ceiling estimated on ``users`` simulated users (no images rendered)."""
        rng = np.random.default_rng(seed)
        sample = [self.sample_user(rng) for _ in range(users)]
        scores = self.bayes_scores(sample)
        for trait in TRAITS:
            acc = scores[trait]["accuracy"]
            scores[trait]["accuracy_stderr"] = float(np.sqrt(acc * (1 - acc) / users))
        return {"users": users, "seed": seed, **scores}

    def majority_scores(self) -> dict:
        """Accuracy of always predicting each trait's most probable class (from the priors)."""
        return {t: max(self.config.priors[t].values()) for t in TRAITS}
