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

import keras
import numpy as np
from keras import ops

from data_prep.labels import TRAITS, label_space
from profiler import __version__
from profiler.config import SET_POOLINGS
from profiler.models.heads import classification_stage, trait_heads

DEFAULT_CAP = 32


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
        if mode not in SET_POOLINGS or mode == "evidence":  # evidence pools per trait, after the heads
            raise ValueError(f"set pooling must be one of {SET_POOLINGS[:-1]}, not {mode!r}")
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

    def __init__(self, units: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, shapes):
        self.kernel = self.add_weight(shape=(shapes[0][-1], self.units), initializer="glorot_uniform",
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        h, mask = inputs
        m = ops.expand_dims(ops.cast(mask > 0.5, h.dtype), -1)  # (n, cap, 1)
        evidence = ops.sum(ops.matmul(h, self.kernel) * m, axis=1)
        return ops.softmax(evidence + self.bias, axis=-1)

    def compute_output_shape(self, shapes):
        return (shapes[0][0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="profiler")
class SetProfiler(keras.Model):
    """Gender, location and occupation from a set of up to ``cap`` image embeddings.

    ``encoder`` is the identity (name@weights digest) of the encoder whose embeddings
    it was trained on; prediction refuses any other. ``mean`` and ``variance`` are the
    per-dimension statistics of the training embeddings.
    """

    def __init__(self, dim: int = 1024, cap: int = DEFAULT_CAP, encoder: str = "",
                 hidden: tuple[int, ...] = (256,), dense: tuple[int, ...] = (256,),
                 dropout: float = 0.5, pooling: str = "mean", mean=None, variance=None,
                 labels: dict | None = None, profiler_version: str | None = None, **kwargs):
        labels = labels or label_space()
        mean = np.zeros(dim, np.float32) if mean is None else np.asarray(mean, np.float32)
        variance = np.ones(dim, np.float32) if variance is None else np.asarray(variance, np.float32)
        inputs = keras.Input((cap, dim + 1), dtype="float32", name="set")
        x, mask = SplitMask(name="split")(inputs)
        x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(x)
        for i, units in enumerate(hidden, 1):
            x = keras.layers.Dense(units, activation="relu", name=f"image{i}")(x)
        if pooling == "evidence":  # per-image evidence, summed per trait: no pooled features
            if dropout:
                x = keras.layers.Dropout(dropout, name="image_dropout")(x)
            outputs = {t: MaskedEvidenceSum(len(labels[t]), name=t)([x, mask]) for t in TRAITS}
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

    def get_config(self) -> dict:
        return {"variant": "set", "dim": self.dim, "cap": self.cap, "encoder": self.encoder,
                "hidden": list(self.hidden), "dense": list(self.dense), "dropout": self.dropout,
                "pooling": self.pooling, "mean": self.mean.tolist(), "variance": self.variance.tolist(),
                "labels": self.labels, "profiler_version": self.profiler_version, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> "SetProfiler":
        config = dict(config)
        config.pop("variant", None)
        for key in ("hidden", "dense"):
            config[key] = tuple(config[key])
        return cls(**config)


def pack_set(vectors: np.ndarray, cap: int, indices: np.ndarray | None = None) -> np.ndarray:
    """One user's (k, dim) embeddings as the model's (cap, dim + 1) input.

    ``indices`` chooses which (at most ``cap``) rows to use; by default the first ``cap``.
    """
    if indices is None:
        indices = np.arange(min(len(vectors), cap))
    out = np.zeros((cap, vectors.shape[1] + 1), np.float32)
    out[:len(indices), :-1] = vectors[indices]
    out[:len(indices), -1] = 1.0
    return out
