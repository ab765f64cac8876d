"""The third model: a small network over the set of a user's image embeddings.

A frozen pretrained encoder (``profiler.encoders``) embeds each image once; this head
sees a user as a *set* of up to ``cap`` embeddings, so a user with 3 images or 25 is
profiled as is, with no filling or dropping, and the order of the images cannot matter.

Input: one float32 array ``(cap, dim + 1)`` per user: each row an image's embedding and,
in the last column, 1 for a real image or 0 for an empty slot. Packing the mask into
the array keeps one input tensor, so training, padding of fixed compute chunks and
prediction treat this model exactly like the 3D CNNs.

Per image: standardisation (the training embeddings' mean and variance, stored in the
model), then shared ReLU layers. Per user: masked pooling over the real images (mean,
max, both, or attention), then the classification stage and the three softmax heads
shared with the paper's models. Every step before the pooling acts on each image alone
and the pooling is symmetric, so the output is invariant to permuting the images and
to adding empty slots.
"""
from __future__ import annotations

import numpy as np

from profiler.backend import import_keras

keras = import_keras()  # before Keras: the backend's settings and quiet start-up
ops = keras.ops

from core.labels import TRAITS, label_space
from profiler import __version__
from profiler.models.choices import BANK_POOLINGS, DEFAULT_CAP, FEATURE_POOLINGS
from profiler.models.heads import check_config, classification_stage, temperatures_of, trait_heads

#: the most values a neighbours bank may hold (1 GiB of float32: a million images at 256 dims)
MAX_BANK_VALUES = 1 << 28


@keras.saving.register_keras_serializable(package="profiler")
class SplitMask(keras.layers.Layer):
    """(n, cap, dim + 1) -> embeddings (n, cap, dim) and mask (n, cap)."""

    def call(self, x):
        return x[..., :-1], x[..., -1]

    def compute_output_shape(self, shape):
        return shape[:-1] + (shape[-1] - 1,), shape[:-1]


@keras.saving.register_keras_serializable(package="profiler")
class MaskedSetPooling(keras.layers.Layer):
    """Pool (n, cap, h) features over the slots whose mask is 1; empty sets give zeros."""

    def __init__(self, mode: str = "meanmax", **kwargs):
        super().__init__(**kwargs)
        if mode not in FEATURE_POOLINGS:
            raise ValueError(f"set pooling must be one of {FEATURE_POOLINGS}, not {mode!r}")
        self.mode = mode

    def build(self, shapes):
        if self.mode == "attention":
            self.score = keras.layers.Dense(1, name="score")
            self.score.build(shapes[0])

    def call(self, inputs):
        h, mask = inputs
        m = ops.expand_dims(ops.cast(mask > 0.5, h.dtype), -1)  # (n, cap, 1)
        count = ops.sum(m, axis=1)  # (n, 1)
        parts = []
        if self.mode == "sum":
            parts.append(ops.sum(h * m, axis=1))
        if self.mode in ("mean", "meanmax"):
            parts.append(ops.sum(h * m, axis=1) / ops.maximum(count, 1.0))
        if self.mode in ("max", "meanmax"):
            low = ops.min(h, axis=1, keepdims=True) - 1.0  # below every real value
            biggest = ops.max(ops.where(m > 0, h, low), axis=1)
            parts.append(ops.where(count > 0, biggest, ops.zeros_like(biggest)))
        if self.mode == "attention":
            logits = self.score(h)  # (n, cap, 1)
            logits = ops.where(m > 0, logits, ops.full_like(logits, -1e9))
            weights = ops.softmax(logits, axis=1) * m
            parts.append(ops.sum(weights * h, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1e-9))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="profiler")
class MaskedEvidenceSum(keras.layers.Layer):
    """One trait's head read as Bayes' rule reads a set: each image's evidence, summed.

    Each real image's features give a score per class (a linear map without bias, like
    a log-likelihood ratio); the scores of the real images are added, a learned bias (the
    prior's log) is added once, and a softmax gives the class probabilities. An empty
    slot adds nothing, and an image whose scores are equal across classes changes
    nothing, as a noise image should not.
    """

    def __init__(self, units: int, scale: float = 1.0, initializer: str = "glorot_uniform",
                 columns: tuple[int, int] | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.units = int(units)
        self.columns = None if columns is None else (int(columns[0]), int(columns[1]))  # features read
        self.scale = float(scale)  # a fixed factor on the scores: the kernel learns ``scale`` x faster
        self.initializer = initializer

    def build(self, shapes):
        width = shapes[0][-1] if self.columns is None else self.columns[1] - self.columns[0]
        self.kernel = self.add_weight(shape=(width, self.units), initializer=self.initializer, name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        h, mask = inputs
        if self.columns is not None:
            h = h[..., self.columns[0]:self.columns[1]]
        m = ops.expand_dims(ops.cast(mask > 0.5, h.dtype), -1)  # (n, cap, 1)
        evidence = ops.sum(ops.matmul(h, self.kernel) * m, axis=1)
        return ops.softmax(self.scale * evidence + self.bias, axis=-1)

    def compute_output_shape(self, shapes):
        return (shapes[0][0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale,
                "initializer": self.initializer, "columns": None if self.columns is None else list(self.columns)}


@keras.saving.register_keras_serializable(package="profiler")
class NeighbourEvidence(keras.layers.Layer):
    """Each image's evidence from the labels of the training images most like it.

    The layer holds a *bank*: the training images' embeddings (standardised, projected
    on their ``dims`` principal axes and scaled to unit length) with their users' labels
    (one-hot, the three traits side by side). An image's ``k`` nearest bank images by
    cosine similarity vote for their users' classes with weights
    ``exp((similarity - best) / temperature)``; the votes, smoothed by one pseudo-vote
    spread as the prior, give ``h(class)``, and the evidence per class is
    ``max(0, log(h / prior))``. A telling image's neighbours are mostly images of the
    same item, posted by users of its class, so it votes strongly; a noise image's
    neighbours belong to users of every class and it says nothing (zero, not noise).
    This uses every training user's images jointly, which a head that sees one user at
    a time cannot. In training, an image's own bank entry (similarity above 0.9999) is
    left out, so it cannot vote for its own label.

    The bank is filled after construction with ``set_bank`` and saved with the
    weights; the configuration holds only its sizes.
    """

    def __init__(self, size: int, dim: int, dims: int, classes: tuple[int, ...], k: int = 200,
                 temperature: float = 0.1, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size, self.dim, self.dims = int(size), int(dim), int(dims)
        self.classes = tuple(int(c) for c in classes)
        self.k, self.temperature = int(min(k, size)), float(temperature)
        # a model file's configuration is input: refuse sizes that would allocate absurd memory
        if not (1 <= self.dims <= self.dim <= 1 << 16 and 1 <= self.size <= 1 << 24
                and 1 <= len(self.classes) <= 8 and all(1 <= c <= 1024 for c in self.classes)
                and self.size * (self.dims + self.width) <= MAX_BANK_VALUES
                and self.k >= 1 and self.temperature > 0 and all(c >= 1 for c in self.classes)):
            raise ValueError(f"neighbour bank of {self.size} x {self.dims} (dim {self.dim}, k {self.k}, "
                             f"temperature {self.temperature}) is out of range")

    @property
    def width(self) -> int:
        """Columns of ``bank_labels``: one per class of every trait."""
        return sum(self.classes)

    def build(self, shape):
        width = self.width
        self.projection = self.add_weight(shape=(self.dim, self.dims), initializer="zeros",
                                          trainable=False, name="projection")
        self.bank = self.add_weight(shape=(self.size, self.dims), initializer="zeros", trainable=False,
                                    name="bank")
        self.bank_labels = self.add_weight(shape=(self.size, width), initializer="zeros", trainable=False,
                                           name="bank_labels")
        self.prior = self.add_weight(shape=(width,), initializer="ones", trainable=False, name="prior")

    def set_bank(self, projection: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray,
                 prior: np.ndarray) -> None:
        """Fill the bank: ``bank`` (size, dim) standardised embeddings, their one-hot labels."""
        projected = bank @ projection
        projected /= np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)
        for weight, value in ((self.projection, projection), (self.bank, projected),
                              (self.bank_labels, bank_labels), (self.prior, prior)):
            weight.assign(np.asarray(value, np.float32))

    def project(self, x):
        """(images, dims): ``x`` (n, cap, dim) standardised, on the bank's principal axes."""
        return ops.matmul(ops.reshape(x, (-1, self.dim)), self.projection)

    def votes(self, x, training=False, projected=None):
        """(images, width) weighted votes of each image's ``k`` nearest bank images, and
        (images, 1) the sum of their weights; ``x`` is (n, cap, dim) standardised
        (``projected``: ``project(x)``, where the caller has it already)."""
        z = self.project(x) if projected is None else projected
        z = z / ops.maximum(ops.norm(z, axis=-1, keepdims=True), 1e-12)
        similarity = ops.matmul(z, ops.transpose(self.bank))  # (images, size)
        if training:
            similarity = ops.where(similarity > 0.9999, ops.full_like(similarity, -2.0), similarity)
        top, index = ops.top_k(similarity, self.k)
        weights = ops.exp((top - top[:, :1]) / self.temperature)  # (images, k), the best 1
        votes = ops.sum(ops.expand_dims(weights, -1) * ops.take(self.bank_labels, index, axis=0), axis=1)
        return votes, ops.sum(weights, axis=1, keepdims=True)

    def call(self, x, training=False):
        shape = ops.shape(x)
        votes, total = self.votes(x, training)
        h = (votes + self.prior) / (total + 1.0)
        evidence = ops.relu(ops.log(h / self.prior))
        return ops.reshape(evidence, (shape[0], shape[1], sum(self.classes)))

    def compute_output_shape(self, shape):
        return tuple(shape[:-1]) + (sum(self.classes),)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "dim": self.dim, "dims": self.dims,
                "classes": list(self.classes), "k": self.k, "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="profiler")
class LatentEvidence(NeighbourEvidence):
    """Each image's log-likelihood under every label combination, from its latent source.

    The bank is the neighbours' one, but each training image carries its
    *responsibilities* over the latent sources of ``profiler.models.latent`` (noise or
    one trait's class), learnt by EM from the users' labels, instead of its user's
    labels. An image's ``k`` nearest bank images give ``q(z | image)`` (their weighted
    responsibilities, with ``alpha`` pseudo-votes of the sources' frequency ``prior``);
    ``emission`` (combinations x sources) turns it into the image's likelihood under each
    combination, and the output is its log: about 0 for every combination when the image
    looks like noise, so a noise image adds nothing.

    With ``reader``, the layer stops before the emission and outputs, per image,
    ``log q(z | image)`` (``width`` columns) followed by the image on the bank's principal
    axes divided by their spread over the training images (``dims`` columns): the input of
    ``SourceReader``, which learns to correct the neighbours' reading and holds the emission.

    With ``side_traits``, each bank image carries a second set of responsibilities, over
    a *side view* of the sources with its own pairs (``side_pairs``), after the main
    view's: the same neighbours read both, each view gives its own likelihoods
    (side by side in the output), and ``ComboPosterior`` reads the ``side_traits`` from
    the side view's and the other traits from the main view's.
    """

    def __init__(self, *args, alpha: float = 1.0, reader: bool = False, pairs=(), side_pairs=(), side_traits=(),
                 **kwargs):
        from profiler.models.latent import check_pairs, check_traits

        classes = kwargs["classes"] if "classes" in kwargs else args[3]
        # before the bank's size checks, which read them
        self.pairs = check_pairs(pairs, len(classes))
        self.side_pairs = check_pairs(side_pairs, len(classes))
        self.side_traits = check_traits(side_traits, len(classes))
        if bool(self.side_pairs) != bool(self.side_traits):
            raise ValueError(f"a side view of the sources needs both its pairs and its traits, not "
                             f"pairs {side_pairs!r} and traits {side_traits!r}"[:300])
        super().__init__(*args, **kwargs)
        self.alpha, self.reader = float(alpha), bool(reader)
        if not (0 < self.alpha <= 1e6 and self.combos <= 1 << 16 and self.combos * self.width <= MAX_BANK_VALUES):
            raise ValueError(f"latent sources of {self.classes} classes (alpha {self.alpha}) are out of range")

    def _count(self, pairs) -> int:
        """Noise, every trait's classes and every pair's classes (``profiler.models.latent.layout``),
        counted rather than laid out: the bank's size checks read it before the classes are
        known to be in range, and laying out 1024^8 combinations would never end."""
        return 1 + sum(self.classes) + sum(self.classes[a] * self.classes[b] for a, b in pairs)

    @property
    def sources(self) -> int:
        """The main view's sources: noise, every trait's classes and every pair's classes."""
        return self._count(self.pairs)

    @property
    def blocks(self) -> tuple[tuple[int, int], ...]:
        """``(sources, padded width)`` of each view of the sources: the main one, then, with
        ``side_traits``, the side view (with ``side_pairs``), read for those traits only.
        Each view is padded with empty columns to a multiple of 16: the vote sum then runs
        in whole SIMD packets for every image, so an image's evidence cannot depend on its
        position in a batch (with 17 columns, packets straddle images and the CPU kernels
        round the ones at a packet's tail differently)."""
        counts = [self.sources] + ([self._count(self.side_pairs)] if self.side_traits else [])
        return tuple((n, -(-n // 16) * 16) for n in counts)

    @property
    def width(self) -> int:
        """Columns of the bank's responsibilities: every view's, padded."""
        return sum(w for _, w in self.blocks)

    @property
    def views(self) -> int:
        return len(self.blocks)

    @property
    def combos(self) -> int:
        return int(np.prod(self.classes))

    @property
    def out_width(self) -> int:
        """Columns of each image's output: the combinations of every view, or with ``reader``
        the sources' log-probabilities and the projected image."""
        return self.width + self.dims if self.reader else self.combos * self.views

    def build(self, shape):
        super().build(shape)
        if self.reader:
            self.spread = self.add_weight(shape=(self.dims,), initializer="ones", trainable=False, name="spread")
        else:
            self.emission = self.add_weight(shape=(self.combos, self.width), initializer="zeros",
                                            trainable=False, name="emission")

    def padded(self, *views) -> np.ndarray:
        """``views`` (each (..., its view's sources)) padded with empty columns to their
        widths and side by side (``width`` columns)."""
        if len(views) != self.views:
            raise ValueError(f"{len(views)} views of the sources given; the layer has {self.views}")
        return np.concatenate([np.pad(np.asarray(a, np.float32), [(0, 0)] * (np.ndim(a) - 1) + [(0, w - n)])
                               for a, (n, w) in zip(views, self.blocks)], axis=-1)

    def set_bank(self, projection, bank, bank_labels, prior, emission=None, spread=None) -> None:
        """Fill the bank: ``bank_labels`` (size, width) the responsibilities, ``prior`` the
        sources' frequency, ``emission`` (combinations, width; without ``reader``) or
        ``spread`` (dims: the training images' standard deviation on each principal axis;
        with ``reader``); every view padded and side by side (``padded``; with one view, the
        sources' columns alone are padded here)."""
        def full(a):
            a = np.asarray(a, np.float32)
            return a if a.shape[-1] == self.width else self.padded(a)

        super().set_bank(projection, bank, full(bank_labels), full(prior))
        if self.reader:
            self.spread.assign(np.asarray(spread, np.float32))
        else:
            self.emission.assign(full(emission))

    def call(self, x, training=False):
        shape = ops.shape(x)
        z = self.project(x)
        votes, total = self.votes(x, training, projected=z)
        q = (votes + self.alpha * self.prior) / (total + self.alpha)
        if self.reader:
            out = ops.concatenate([ops.log(ops.maximum(q, 1e-30)), z / self.spread], axis=-1)
        else:
            out = view_loglikelihoods(q, self.emission, self.blocks)  # (images, views x combos)
        return ops.reshape(out, (shape[0], shape[1], self.out_width))

    def compute_output_shape(self, shape):
        return tuple(shape[:-1]) + (self.out_width,)

    def get_config(self):
        side = ({"side_pairs": [list(pair) for pair in self.side_pairs], "side_traits": list(self.side_traits)}
                if self.side_traits else {})
        return {**super().get_config(), "alpha": self.alpha, "reader": self.reader,
                "pairs": [list(pair) for pair in self.pairs], **side}


def view_loglikelihoods(probabilities, emission, blocks):
    """Each view's log-likelihoods of every combination, side by side: per view, its
    sources' probabilities (a slice of ``probabilities``, (images, width)) through its
    slice of ``emission`` (combinations, width)."""
    if len(blocks) == 1:
        return ops.log(ops.maximum(ops.matmul(probabilities, ops.transpose(emission)), 1e-30))
    out, start = [], 0
    for _, width in blocks:
        likelihood = ops.matmul(probabilities[..., start:start + width],
                                ops.transpose(emission[:, start:start + width]))
        out.append(ops.log(ops.maximum(likelihood, 1e-30)))
        start += width
    return ops.concatenate(out, axis=-1)


@keras.saving.register_keras_serializable(package="profiler")
class SourceReader(keras.layers.Layer):
    """Each image's log-likelihood of every label combination, with a learnt correction of
    the neighbours' reading of its source.

    Input per image (``LatentEvidence`` with ``reader``): ``log q(z | image)`` from the
    neighbours (``width`` columns, the first ``sources`` of them real) and the image's
    ``dims`` standardised principal coordinates ``x``. The source's probabilities become
    ``softmax(log q + x W + b)``; ``W`` and ``b`` start at zero, so training starts from
    the neighbours' reading, and learn through the users' labels only (an L2 penalty
    ``l2`` on ``W``). Neighbours find an item by its look, but two items that differ in a
    detail (a woman's and a man's version of one emoji) sit together and their votes
    mix; a direction in ``x`` can tell them apart. ``emission`` (combinations x width)
    then gives the likelihoods, and the output is their log, as ``LatentEvidence``'s.
    With two views of the sources (``blocks``), each view's columns get a softmax of their
    own and its slice of the emission, and the views' log-likelihoods come side by side.
    """

    def __init__(self, sources: int, width: int, dims: int, combos: int, l2: float = 1e-3, blocks=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.sources, self.width, self.dims, self.combos = int(sources), int(width), int(dims), int(combos)
        self.l2 = float(l2)
        try:  # the views of the sources (LatentEvidence.blocks): (sources, padded width) each
            self.blocks = tuple((int(n), int(w)) for n, w in (blocks or [(self.sources, self.width)]))
        except (TypeError, ValueError):
            self.blocks = ()
        if not (1 <= self.sources <= self.width <= 1 << 12 and 1 <= self.dims <= 1 << 16
                and 1 <= self.combos <= 1 << 16 and (self.combos + self.dims) * self.width <= MAX_BANK_VALUES
                and 0 <= self.l2 <= 1e6 and 1 <= len(self.blocks) <= 2 and self.blocks[0][0] == self.sources
                and all(1 <= n <= w for n, w in self.blocks) and sum(w for _, w in self.blocks) == self.width):
            raise ValueError(f"source reader of {self.sources} sources, {self.dims} dims, {self.combos} "
                             f"combinations (l2 {self.l2}, views {blocks!r}) is out of range"[:300])

    def build(self, shape):
        self.kernel = self.add_weight(shape=(self.dims, self.width), initializer="zeros", name="kernel",
                                      regularizer=keras.regularizers.L2(self.l2) if self.l2 else None)
        self.bias = self.add_weight(shape=(self.width,), initializer="zeros", name="bias")
        self.emission = self.add_weight(shape=(self.combos, self.width), initializer="zeros", trainable=False,
                                        name="emission")
        # padded columns stay impossible whatever the kernel learns
        self.closed = np.concatenate([np.where(np.arange(w) < n, 0.0, -1e9) for n, w in self.blocks]).astype(np.float32)

    def call(self, x):
        logits = x[..., :self.width] + ops.matmul(x[..., self.width:], self.kernel) + self.bias + self.closed
        if len(self.blocks) == 1:
            probabilities = ops.softmax(logits, axis=-1)
        else:  # each view's sources are a distribution of their own
            cut = self.blocks[0][1]
            probabilities = ops.concatenate([ops.softmax(logits[..., :cut], axis=-1),
                                             ops.softmax(logits[..., cut:], axis=-1)], axis=-1)
        return view_loglikelihoods(probabilities, self.emission, self.blocks)

    def compute_output_shape(self, shape):
        return tuple(shape[:-1]) + (self.combos * len(self.blocks),)

    def get_config(self):
        views = {"blocks": [list(b) for b in self.blocks]} if len(self.blocks) > 1 else {}
        return {**super().get_config(), "sources": self.sources, "width": self.width, "dims": self.dims,
                "combos": self.combos, "l2": self.l2, **views}


@keras.saving.register_keras_serializable(package="profiler")
class ComboPosterior(keras.layers.Layer):
    """Per-trait class probabilities from each image's log-likelihood of every combination.

    The real images' log-likelihoods are added (an empty slot adds nothing), scaled by a
    learnt ``scale`` (1 at first), the log prior of each combination (``bias``, learnt; it
    starts even where training weighs the classes equally, else at the training users'
    frequencies) is added, and the softmax over the
    combinations is summed over the other traits: the Bayes rule over a set. Returns one
    (n, classes) array per trait.

    With ``side_traits`` (trait positions), each image brings a second view's
    log-likelihoods after the first's (``LatentEvidence``'s side view of the sources); the
    same rule runs on them, with a scale of their own (``side_scale``) and the same prior,
    and those traits' probabilities come from it.
    """

    def __init__(self, classes: tuple[int, ...], side_traits=(), **kwargs):
        from profiler.models.latent import check_traits

        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.classes = tuple(int(c) for c in classes)
        if not (1 <= len(self.classes) <= 8 and 1 <= int(np.prod(self.classes)) <= 1 << 16):
            raise ValueError(f"label combinations of {self.classes} classes are out of range")
        self.side_traits = check_traits(side_traits, len(self.classes))

    def build(self, shapes):
        self.bias = self.add_weight(shape=(int(np.prod(self.classes)),), initializer="zeros", name="bias")
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        if self.side_traits:
            self.side_scale = self.add_weight(shape=(), initializer="ones", name="side_scale")

    def _marginals(self, total, scale):
        joint = ops.reshape(ops.softmax(scale * total + self.bias, axis=-1), (-1, *self.classes))
        axes = range(1, len(self.classes) + 1)
        return [ops.sum(joint, axis=tuple(a for a in axes if a != t + 1)) for t in range(len(self.classes))]

    def call(self, inputs):
        loglike, mask = inputs
        m = ops.expand_dims(ops.cast(mask > 0.5, loglike.dtype), -1)  # (n, cap, 1)
        total = ops.sum(loglike * m, axis=1)  # (n, views x combos)
        if not self.side_traits:
            return self._marginals(total, self.scale)
        combos = int(np.prod(self.classes))
        main = self._marginals(total[:, :combos], self.scale)
        side = self._marginals(total[:, combos:], self.side_scale)
        return [side[t] if t in self.side_traits else main[t] for t in range(len(self.classes))]

    def compute_output_shape(self, shapes):
        return [(shapes[0][0], c) for c in self.classes]

    def get_config(self):
        side = {"side_traits": list(self.side_traits)} if self.side_traits else {}
        return {**super().get_config(), "classes": list(self.classes), **side}


@keras.saving.register_keras_serializable(package="profiler")
class HeldWeights(keras.layers.Layer):
    """Arrays of the given ``shapes`` kept with a model (saved and loaded with its weights,
    never trained, never called): an adapted encoder's top (``profiler.encoders.adapted``)."""

    #: the most values a model may hold this way (a hostile file must not claim gigabytes)
    MAX_VALUES = 16_000_000

    def __init__(self, shapes=(), **kwargs):
        super().__init__(trainable=False, **{k: v for k, v in kwargs.items() if k != "trainable"})
        try:
            self.shapes = [[int(d) for d in shape] for shape in shapes]
        except (TypeError, ValueError):
            raise ValueError(f"held weights' shapes must be lists of whole numbers, not {shapes!r}"[:300]) from None
        sizes = [int(np.prod(shape)) if all(0 < d <= self.MAX_VALUES for d in shape) and len(shape) <= 8 else -1
                 for shape in self.shapes]
        if len(sizes) > 1000 or min(sizes, default=0) < 0 or sum(sizes) > self.MAX_VALUES:
            raise ValueError(f"held weights must be at most 1000 arrays of at most {self.MAX_VALUES} values "
                             "in all, each of 1 to 8 positive dimensions")
        self.held = [self.add_weight(shape=tuple(shape), initializer="zeros", trainable=False, name=f"w{i:03d}")
                     for i, shape in enumerate(self.shapes)]
        self.built = True

    def call(self, x):
        return x

    def assign(self, arrays) -> None:
        if [list(np.shape(a)) for a in arrays] != self.shapes:
            raise ValueError("the arrays do not have the held weights' shapes")
        for variable, value in zip(self.held, arrays):
            variable.assign(np.asarray(value, np.float32))

    def arrays(self) -> list[np.ndarray]:
        return [np.asarray(v) for v in self.held]

    def get_config(self):
        return {**super().get_config(), "shapes": self.shapes}


@keras.saving.register_keras_serializable(package="profiler")
class SetProfiler(keras.Model):
    """Gender, location and occupation from a set of up to ``cap`` image embeddings.

    ``encoder`` is the identity (name@weights digest) of the encoder whose embeddings
    it was trained on; prediction refuses any other. ``mean`` and ``variance`` are the
    per-dimension statistics of the training embeddings. ``temperatures`` (per trait)
    calibrate the heads' probabilities; the model's outputs are the raw softmax, and
    prediction applies them. ``encoder_top`` (the shapes of an adapted encoder's top
    weights, or None) makes room for those weights in the model (``encoder_top_weights``),
    so that the model file holds the encoder its embeddings came from.
    """

    def __init__(self, dim: int = 1024, cap: int = DEFAULT_CAP, encoder: str = "",
                 hidden: tuple[int, ...] = (256,), dense: tuple[int, ...] = (256,),
                 dropout: float = 0.5, pooling: str = "mean", mean=None, variance=None,
                 labels: dict | None = None, profiler_version: str | None = None,
                 neighbours: dict | None = None, temperatures: dict | None = None,
                 decisions: dict | None = None, ood: dict | None = None,
                 encoder_top: list | None = None, **kwargs):
        labels = labels or label_space()
        check_config(labels, temperatures, decisions, ood, dim=dim, cap=cap, hidden=list(hidden), dense=list(dense))
        mean = np.zeros(dim, np.float32) if mean is None else np.asarray(mean, np.float32)
        variance = np.ones(dim, np.float32) if variance is None else np.asarray(variance, np.float32)
        inputs = keras.Input((cap, dim + 1), dtype="float32", name="set")
        x, mask = SplitMask(name="split")(inputs)
        x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(x)
        classes = tuple(len(labels[t]) for t in TRAITS)
        if pooling in BANK_POOLINGS:  # fixed evidence from the training bank; only the heads learn
            settings = dict(neighbours or {})
            reader = {"l2": settings.pop("reader_l2")} if "reader_l2" in settings else {}
            bank = LatentEvidence if pooling == "latent" else NeighbourEvidence
            layer = bank(dim=dim, classes=classes, name="neighbours", **settings)
            x = layer(x)
            if pooling == "latent" and layer.reader:
                x = SourceReader(layer.sources, layer.width, layer.dims, layer.combos, blocks=layer.blocks,
                                 name="reader", **reader)(x)
        else:
            for i, units in enumerate(hidden, 1):
                x = keras.layers.Dense(units, activation="relu", name=f"image{i}")(x)
        if pooling == "latent":  # the Bayes rule over the images' log-likelihoods
            side = layer.side_traits  # "latent" is a bank pooling: the layer is there
            outputs = dict(zip(TRAITS, ComboPosterior(classes, side_traits=side, name="posterior")([x, mask])))
        elif pooling in ("evidence", "neighbours"):  # per-image evidence, summed per trait
            if dropout and pooling == "evidence":
                x = keras.layers.Dropout(dropout, name="image_dropout")(x)
            outputs = {}
            start = 0
            for t in TRAITS:
                # the neighbours' evidence is fixed and small (a fraction of a nat an image): each
                # trait's combiner reads its own classes' evidence, starts from none, and moves 10x
                # faster than the optimiser's step
                options = ({"scale": 10.0, "initializer": "zeros", "columns": (start, start + len(labels[t]))}
                           if pooling == "neighbours" else {})
                outputs[t] = MaskedEvidenceSum(len(labels[t]), name=t, **options)([x, mask])
                start += len(labels[t])
        else:
            x = MaskedSetPooling(pooling, name="pool")([x, mask])
            if dropout:
                x = keras.layers.Dropout(dropout, name="pool_dropout")(x)
            x = classification_stage(x, tuple(dense), dropout)
            outputs = trait_heads(x, labels)
        kwargs.setdefault("name", "set")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.variant = "set"
        self.dim, self.cap, self.encoder = dim, cap, encoder
        self.hidden, self.dense = tuple(hidden), tuple(dense)
        self.dropout, self.pooling = dropout, pooling
        self.mean, self.variance = mean, variance
        self.labels = {t: list(labels[t]) for t in TRAITS}
        self.profiler_version = profiler_version or __version__
        self.temperatures = temperatures_of(temperatures)  # fitted after training; see calibration
        self.decisions = decisions  # recorded after training; see profiler.decisions
        self.ood = ood  # recorded after training; see profiler.ood
        self.neighbours = (None if pooling not in BANK_POOLINGS else
                           {k: v for k, v in self.get_layer("neighbours").get_config().items()
                            if k in ("size", "dims", "k", "temperature", "alpha", "reader", "pairs", "side_pairs",
                                    "side_traits")})
        if self.neighbours and self.neighbours.get("reader"):
            self.neighbours["reader_l2"] = self.get_layer("reader").l2
        self.encoder_top = None if encoder_top is None else HeldWeights(encoder_top, name="encoder_top")

    def encoder_top_weights(self) -> list[np.ndarray] | None:
        """The adapted encoder's top weights this model keeps, or None (a frozen encoder)."""
        return None if self.encoder_top is None else self.encoder_top.arrays()

    def fixed_stage(self):
        """``(stage, head)`` where the model starts with a stage that training never changes.

        With "neighbours" or "latent" pooling, each image's evidence depends only on the image
        (and the fixed bank), so training computes it once per image with ``stage``
        (standardised rows (n, dim) in, evidence (n, width) out) and fits ``head``, a model
        over sets of evidence rows that shares its layers (so its weights) with this one.
        ``None`` for the other poolings: every layer before the heads learns.
        """
        if self.pooling not in BANK_POOLINGS:
            return None
        standardize, neighbours = self.get_layer("standardize"), self.get_layer("neighbours")

        def stage(rows: np.ndarray, *, training: bool, chunk: int = 1024) -> np.ndarray:
            out = [np.asarray(neighbours(standardize(rows[i:i + chunk][None]), training=training))[0]
                   for i in range(0, len(rows), chunk)]
            return np.concatenate(out) if out else np.zeros((0, width), np.float32)

        width = neighbours.out_width if self.pooling == "latent" else sum(neighbours.classes)
        inputs = keras.Input((self.cap, width + 1), dtype="float32", name="evidence_set")
        x, mask = SplitMask(name="split_evidence")(inputs)
        if self.pooling == "latent" and neighbours.reader:
            x = self.get_layer("reader")(x)
        if self.pooling == "latent":
            outputs = dict(zip(TRAITS, self.get_layer("posterior")([x, mask])))
        else:
            outputs = {t: self.get_layer(t)([x, mask]) for t in TRAITS}
        head = keras.Model(inputs, outputs, name="set_head")
        return stage, head

    def get_config(self) -> dict:
        return {"variant": "set", "dim": self.dim, "cap": self.cap, "encoder": self.encoder,
                "hidden": list(self.hidden), "dense": list(self.dense), "dropout": self.dropout,
                "pooling": self.pooling, "mean": self.mean.tolist(), "variance": self.variance.tolist(),
                "labels": self.labels, "profiler_version": self.profiler_version,
                "neighbours": self.neighbours, "temperatures": self.temperatures,
                "decisions": self.decisions, "ood": self.ood, "name": self.name,
                **({} if self.encoder_top is None else {"encoder_top": self.encoder_top.shapes})}

    @classmethod
    def from_config(cls, config: dict) -> "SetProfiler":
        config = dict(config)
        config.pop("variant", None)
        for key in ("hidden", "dense"):
            config[key] = tuple(config[key])
        return cls(**config)
