"""Which of a user's images tell what: the latent sources behind the "latent" set pooling.

A user's labels say nothing about which of its images carry them. This module models
each image as coming from one latent *source*: noise (the same for every user), one
trait's class (a female-only item, a region's landmark, a job's tool) or, for the trait
``pairs`` asked for, a pair of classes (a woman at a doctor's work shows both). A user whose labels are the
combination ``c`` posts sources ``z`` with probability ``theta[kind(z)]`` when ``z``
agrees with ``c`` (noise always does) and never otherwise. An image's likelihood under
``c`` is then ``sum_z allowed[c, z] * theta[kind(z)] * q(z | image) / pi(z)``, with
``q(z | image)`` read from the training images most like it and ``pi`` the sources'
overall frequency; a user's posterior over combinations is the prior times the product
over its images, which is how the Bayes rule reads a set.

``fit_sources`` learns the training images' sources by expectation-maximisation from
the users' labels alone: each round, an image's responsibilities over the sources its
user's labels allow are re-estimated from the responsibilities of its nearest training
images (itself and exact duplicates left out) and ``theta``. Images of one item sit
together in the encoder's space and are posted by users who share the item's labels,
so their responsibilities sharpen towards the item's source, while a noise item's
neighbours belong to users of every class and stay noise. Numpy only; the Keras layers
that read the result are ``profiler.models.set_head.LatentEvidence`` (the neighbours'
reading of a new image's source) and ``SourceReader`` (a correction of that reading
learnt from the users' labels, and the emission).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from sklearn.isotonic import IsotonicRegression

#: the share of a user's images first assumed to be noise, and to carry each trait's class
#: (or each pair's classes):
#: the starting point of ``theta`` (re-estimated every round)
START_NOISE, START_TRAIT = 0.7, 0.1


@dataclass(frozen=True)
class Layout:
    """The sources for traits with ``classes`` classes each (in trait order).

    ``kind[z]``: 0 for noise, 1 + t for trait ``t``'s classes, 1 + traits + j for the
    class pairs of ``pairs[j]`` (two trait positions). ``allowed[c, z]``: whether
    combination ``c`` (traits' classes in row-major order, as ``np.ndindex(*classes)`` lists
    them) can post source ``z``.
    """

    classes: tuple[int, ...]
    kind: np.ndarray
    allowed: np.ndarray
    pairs: tuple[tuple[int, int], ...] = ()

    @property
    def sources(self) -> int:
        return len(self.kind)

    @property
    def kinds(self) -> int:
        return int(self.kind.max()) + 1

    def of_labels(self, labels: np.ndarray) -> np.ndarray:
        """(n, sources) 0/1: the sources that users with ``labels`` (n, traits) may post."""
        combo = np.ravel_multi_index(tuple(np.asarray(labels).T), self.classes)
        return self.allowed[combo]


def check_pairs(pairs, traits: int) -> tuple[tuple[int, int], ...]:
    """``pairs`` as sorted tuples of two distinct trait positions below ``traits``, each once
    (``ValueError`` otherwise)."""
    out = []
    try:
        for pair in pairs:
            a, b = sorted(int(t) for t in pair) if len(pair) == 2 else (-1, -1)
            if not 0 <= a < b < traits or (a, b) in out:
                raise ValueError
            out.append((a, b))
    except (TypeError, ValueError):
        raise ValueError(f"latent source pairs must be distinct pairs of two of {traits} traits, "
                         f"not {pairs!r}"[:300]) from None
    return tuple(out)


def check_traits(traits, count: int) -> tuple[int, ...]:
    """``traits`` as sorted distinct trait positions below ``count`` (``ValueError`` otherwise)."""
    try:
        out = tuple(sorted(int(t) for t in traits))
        if len(set(out)) != len(out) or not all(0 <= t < count for t in out):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"latent side traits must be distinct positions of {count} traits, "
                         f"not {traits!r}"[:300]) from None
    return out


def layout(classes, pairs=()) -> Layout:
    """The sources of traits with ``classes`` classes: noise, then each trait's classes,
    then for each of ``pairs`` (two trait positions) each pair of their classes."""
    classes = tuple(int(c) for c in classes)
    pairs = check_pairs(pairs, len(classes))
    combos = np.array(list(np.ndindex(*classes)), dtype=np.int64).reshape(-1, len(classes))
    kind, columns = [0], [np.ones(len(combos), bool)]
    for t, k in enumerate(classes):
        for value in range(k):
            kind.append(1 + t)
            columns.append(combos[:, t] == value)
    for j, (a, b) in enumerate(pairs):
        for first, second in np.ndindex(classes[a], classes[b]):
            kind.append(1 + len(classes) + j)
            columns.append((combos[:, a] == first) & (combos[:, b] == second))
    return Layout(classes, np.array(kind, np.int64), np.stack(columns, axis=1).astype(np.float64), pairs)


def start_theta(plan: Layout) -> np.ndarray:
    theta = np.array([START_NOISE] + [START_TRAIT] * (plan.kinds - 1))
    return theta / theta.sum()


def nearest(points: np.ndarray, bank: np.ndarray, k: int, temperature: float, *,
            exclude_same: bool, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Each point's ``k`` most similar bank rows (unit-length rows: cosine similarity), most
    similar first, and their vote weights ``exp((similarity - best) / temperature)``, as the
    layer weighs them. ``exclude_same`` leaves out bank rows above 0.9999 similarity
    (itself, exact duplicates)."""
    k = min(k, len(bank))
    index = np.zeros((len(points), k), np.int64)
    weight = np.zeros((len(points), k), np.float64)
    # a chunk's similarities and their partition's indices take 12 bytes a bank row each:
    # fewer points at a time past 65,536 rows keep them under 1.5 GiB (up to that size the
    # chunk, so every similarity to the last bit, is what it always was)
    chunk = min(chunk, max(64, (1 << 27) // max(len(bank), 1)))
    for i in range(0, len(points), chunk):
        sim = points[i:i + chunk] @ bank.T
        if exclude_same:
            sim[sim > 0.9999] = -2.0
        np.negative(sim, out=sim)  # in place: the largest similarities first, no copy
        top = np.argpartition(sim, k - 1, axis=1)[:, :k] if k < len(bank) else np.tile(np.arange(k), (len(sim), 1))
        s = -np.take_along_axis(sim, top, axis=1).astype(np.float64)
        order = np.argsort(-s, axis=1, kind="stable")
        top, s = np.take_along_axis(top, order, axis=1), np.take_along_axis(s, order, axis=1)
        index[i:i + chunk] = top
        weight[i:i + chunk] = np.exp((s - s.max(axis=1, keepdims=True)) / temperature)
    return index, weight


def read_sources(index: np.ndarray, weight: np.ndarray, responsibilities: np.ndarray,
                 pi: np.ndarray, alpha: float) -> np.ndarray:
    """q(z | image): its neighbours' weighted responsibilities with ``alpha`` pseudo-votes of ``pi``."""
    votes = np.zeros((len(index), responsibilities.shape[1]), np.result_type(weight, responsibilities))
    block = 8192  # the neighbours' responsibilities, (images, k, sources), a block of images at a time
    for i in range(0, len(index), block):
        rows = slice(i, i + block)
        votes[rows] = np.einsum("nk,nkz->nz", weight[rows], responsibilities[index[rows]])
    return (votes + alpha * pi) / (weight.sum(axis=1, keepdims=True) + alpha)


@dataclass
class Sources:
    """What ``fit_sources`` learnt: per training image its responsibilities, the sources'
    frequency ``pi``, the kinds' shares ``theta`` and the (combos, sources) emission
    factors ``allowed * theta[kind] / pi`` that turn q(z | image) into likelihoods."""

    responsibilities: np.ndarray
    pi: np.ndarray
    theta: np.ndarray
    emission: np.ndarray


def sources_of(responsibilities: np.ndarray, plan: Layout) -> Sources:
    """``Sources`` for the images' ``responsibilities`` (n, sources): the kinds' shares, the
    sources' frequency and the emission factors that follow from them."""
    theta = np.bincount(plan.kind, weights=responsibilities.sum(axis=0), minlength=plan.kinds) / len(responsibilities)
    pi = np.maximum(responsibilities.mean(axis=0), 1e-12)
    return Sources(responsibilities, pi, theta, plan.allowed * theta[plan.kind] / pi)


class Start(NamedTuple):
    """How ``fit_sources``' first round reads the neighbours' labels (``label_reading``):
    ``trust``, the nearest neighbour's chance of being the same item; ``temperature``, the
    neighbours' vote weights; ``by_rank``: the farther neighbours' trust falls as their
    labels' agreement does (``rank_agreement``), else every neighbour gets ``trust``."""

    trust: float
    temperature: float
    by_rank: bool = False


def rank_agreement(labels: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(k,): per neighbour rank (``index``'s columns, most similar first, a row per image of
    ``labels``), how much more often than chance the neighbour's user shares the image's
    user's class, averaged over the traits, as a share of the nearest rank's (smoothed below).

    An image that shows an item of a trait's class has a neighbour of the same class (the
    same item, or another of the class's) with a probability that falls with the rank; a
    noise image's neighbours agree by chance. So the excess agreement ``(agree - chance) /
    (1 - chance)`` (``chance`` the sum of the squared class shares) follows the same-item
    probability's fall, scaled by the share of images that show items. When items have
    many images (the paper's size) it stays high over all 50 neighbours; when they have few
    (the demo's) it falls within the first ten. The same-item probability can only fall
    with the rank, so the averaged excess is fitted by a non-increasing step function
    (isotonic regression: each rank's own figure is noisy where there are few images) and
    divided by the nearest rank's. All zeros where no rank agrees beyond chance.
    """
    excess = []
    for t in range(labels.shape[1]):
        share = np.bincount(labels[:, t]) / len(labels)
        chance = float((share ** 2).sum())
        if chance < 1 - 1e-9:
            agree = (labels[index, t] == labels[:, t, None]).mean(axis=0)
            excess.append(np.clip((agree - chance) / (1 - chance), 0.0, None))
    if not excess:
        return np.zeros(index.shape[1])
    ranks = np.arange(index.shape[1])
    profile = IsotonicRegression(increasing=False).fit_transform(ranks, np.mean(excess, axis=0))
    return profile / profile[0] if profile[0] > 0 else np.zeros(index.shape[1])


def label_reading(allowed: np.ndarray, index: np.ndarray, weight: np.ndarray, trust) -> np.ndarray:
    """q(z | image) / pi(z), up to a factor, read from the *labels* of an image's neighbours
    (``index``, ``weight`` as ``nearest`` gives them, a row per image read; ``allowed`` (n, sources): the sources each
    training image's user may post): the EM's start when ``fit_sources`` is given ``start``.

    If an image shows an item of source ``z``, each neighbour is the same item with
    probability ``trust`` (a number, or one per column of ``index``: per neighbour rank;
    its user then certainly may post ``z``) and otherwise any image
    (its user may post ``z`` with ``z``'s overall share ``a(z)`` of the images); if it shows
    noise, each neighbour's user may post ``z`` with ``a(z)`` alone. Each neighbour weighs in
    with its vote weight as the likelihood ratio ``trust * allowed / a(z) + 1 - trust``,
    multiplied over the neighbours: a neighbour whose user may not post ``z`` counts
    against ``z`` (``1 - trust``), where the votes of responsibilities only dilute it. So a
    noise item that a few users of one class happened to post is not taken for that class's
    item, as the plain EM's first rounds take it (the README, "Which gap holds occupation").
    Noise (allowed to everyone, ``a = 1``) always reads 1; the ratios are capped at e^30.
    """
    share = np.maximum(allowed.mean(axis=0), 1e-12)
    log_ratio = np.zeros((len(index), allowed.shape[1]), np.float64)
    for z in range(allowed.shape[1]):
        log_ratio[:, z] = (weight * np.log(trust * allowed[index, z] / share[z] + 1 - trust)).sum(axis=1)
    return np.exp(np.clip(log_ratio, -30.0, 30.0))


def fit_sources(unit_rows: np.ndarray, labels: np.ndarray, plan: Layout, *, k: int, temperature: float,
                alpha: float = 1.0, rounds: int = 5, start: Start | tuple | None = None) -> Sources:
    """EM over the training images' sources.

    ``unit_rows`` (n, d): the training images as the layer compares them (projected,
    unit length); ``labels`` (n, traits): each image's user's labels. ``start``: a ``Start``
    (or its fields as a tuple), or None: the first round's responsibilities read from the
    neighbours' labels (``label_reading``, the neighbours weighted with its temperature, the
    trust per rank with ``by_rank``) instead of from the users' labels and the sources'
    shares alone.
    """
    allowed = plan.of_labels(labels)
    theta = start_theta(plan)
    index, weight = nearest(unit_rows, unit_rows, k, temperature, exclude_same=True)
    q = None
    if start is not None:
        start = Start(*start)
        trust = start.trust * rank_agreement(labels, index) if start.by_rank else start.trust
        q = label_reading(allowed, index, weight ** (temperature / start.temperature), trust)
    for _ in range(max(1, rounds)):
        r = allowed * theta[plan.kind] * (1.0 if q is None else q)
        r /= r.sum(axis=1, keepdims=True)
        sources = sources_of(r, plan)
        theta = sources.theta
        q = read_sources(index, weight, r, sources.pi, alpha) / sources.pi
    return sources


def within_whitening(rows: np.ndarray, responsibilities: np.ndarray, shrink: float) -> np.ndarray:
    """(d, d) map that whitens ``rows`` (n, d) by their spread *within* the sources that
    ``responsibilities`` (n, sources) give them, shrunk by ``shrink`` (0 to 1) towards
    equal spread on every axis.

    Directions along which the images of one source vary (an emoji's rendering, a noise
    picture's clutter) shrink and those that tell sources apart stand out, so that an
    image's nearest neighbours are more often of its own source: the EM's own estimate of
    which image is which decides which axes matter. The within-source scatter is
    ``sum_z sum_i r_iz (x_i - m_z)(x_i - m_z)^T / n``, ``m_z`` the responsibility-weighted
    mean of source ``z``. The new axes come in order of the images' whole spread along
    them, largest first (as principal axes do).
    """
    rows = np.asarray(rows, np.float64)
    weight = responsibilities.sum(axis=0)
    means = (responsibilities.T @ rows) / np.maximum(weight, 1e-12)[:, None]
    scatter = (rows.T @ rows - (means.T * weight) @ means) / len(rows)
    scatter = (scatter + scatter.T) / 2
    d = len(scatter)
    scatter = (1 - shrink) * scatter + shrink * max(np.trace(scatter) / d, 1e-12) * np.eye(d)
    values, vectors = np.linalg.eigh(scatter)
    axes = vectors / np.sqrt(np.maximum(values, 1e-12 * values.max()))
    return axes[:, np.argsort(-(rows @ axes).var(axis=0), kind="stable")]


def whitened_sources(standard: np.ndarray, projection: np.ndarray, labels: np.ndarray, plan: Layout, *,
                     k: int, temperature: float, alpha: float = 1.0, rounds: int = 5,
                     whiten: float | None = None,
                     start: Start | tuple | None = None) -> tuple[np.ndarray, np.ndarray, Sources]:
    """The sources of the training images ``standard`` (n, dim; standardised) on the axes
    ``projection`` (dim, dims): ``fit_sources`` on the projected rows made unit length; with
    ``whiten`` (a shrinkage share), the axes are then whitened by the spread within the
    sources found (``within_whitening``) and the EM runs again on them. ``start``: each EM's
    first round as ``fit_sources`` takes it.

    Returns the final axes, the rows projected on them and the sources. Training's
    ``fill_sources`` and the encoder's adaptation (``profiler.encoders.adapted``) both find
    the images' sources this way.
    """
    def em(projection: np.ndarray) -> tuple[np.ndarray, Sources]:
        projected = standard @ projection
        unit = projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)
        return projected, fit_sources(unit.astype(np.float64), labels, plan, k=k, temperature=temperature,
                                      alpha=alpha, rounds=rounds, start=start)

    projected, sources = em(projection)
    if whiten is not None:
        projection = (projection @ within_whitening(projected, sources.responsibilities, whiten)).astype(np.float32)
        projected, sources = em(projection)
    return projection, projected, sources
