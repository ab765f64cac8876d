"""EfficientNet-Lite2 with its last block adapted to a dataset: the encoder's top, fine-tuned.

The frozen ImageNet encoder caps what any reader of its embeddings can get (the instance
probe's figures in the README). Adapting its top to the dataset's images raises that cap
where there are enough users (``bench/adapt.py``: at the paper's size the probe's share of
the Bayes rule rose from 90 / 93 / 83 % to 94 / 98 / 88 % in three epochs; at the demo's
size no target a model can get from user labels helped). The network is cut before its
last MBConv block (``split_network``: the bottom, frozen, and the top, the last block and
the head convolution, 1.2 M weights, batch normalisation frozen); the top is trained on
the images' activations at the cut, computed once, towards each training image's
*sources* as the latent head's EM finds them from the users' labels (``source_targets``,
the same EM as training's ``fill_sources``; ``adapt_top``).

``AdaptedEncoder`` is the default encoder's views (the whole image and its centre crop of
2/3, averaged) through the float network with an adapted top read from a ``.npz`` file of
the top's weights (``save_top``; loaded without pickles, every array's shape checked).
Its identity names the base weights' digest and the top file's, so embeddings of the
frozen encoder or of another adaptation are never mixed with its own.
"""
from __future__ import annotations

import logging
import time
import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np

from core.errors import ModelFileError
from profiler.encoders.base import file_digest
from profiler.encoders.multicrop import MultiCropEncoder

log = logging.getLogger("profiler")

#: the layer whose input is the cut: the first layer of the last MBConv block (Lite2's 21st)
CUT_LAYER = "blocks.20._expand_conv"
#: the EM's settings for the adaptation's targets (the latent head's defaults)
TARGET_DIMS, TARGET_K, TARGET_TEMPERATURE, TARGET_WHITEN, TARGET_ROUNDS = 512, 50, 0.05, 0.3, 4


def split_network(network):
    """(bottom, top) of an EfficientNet-Lite2 Keras ``network``, sharing its layers: the bottom
    up to the cut, the top from the cut to the embedding; the top's batch normalisation frozen."""
    from profiler.backend import import_keras

    keras = import_keras()
    try:
        cut = network.get_layer(CUT_LAYER).input
    except ValueError as exc:
        raise ValueError(f"not an EfficientNet-Lite2 network: it has no layer {CUT_LAYER!r}") from exc
    top = keras.Model(cut, network.get_layer("features").output, name="adapted_top")
    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return keras.Model(network.input, cut, name="frozen_bottom"), top


def save_top(top, path: str | Path) -> Path:
    """The top's weights (in ``top.weights`` order) as ``path`` (.npz), written atomically."""
    from core.io import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **{f"w{i:03d}": np.asarray(w) for i, w in enumerate(top.weights)})
    return path


def load_top(top, path: str | Path) -> None:
    """Set ``top``'s weights from ``path`` (``save_top``'s file); ``ModelFileError`` naming the
    file if it is not one (no pickles are read; every array's shape and kind is checked)."""
    path = Path(path)
    expected = [tuple(w.shape) for w in top.weights]
    try:
        with np.load(path, allow_pickle=False) as stored:
            names = sorted(stored.files)
            arrays = [stored[n] for n in names] if names == [f"w{i:03d}" for i in range(len(expected))] else None
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such adapted top weights file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(f"{path}: not an adapted top weights file ({type(exc).__name__}: {exc})"[:400]) from None
    if arrays is None or [a.shape for a in arrays] != expected or any(a.dtype.kind != "f" for a in arrays):
        raise ModelFileError(f"{path}: not the weights of EfficientNet-Lite2's top (expected {len(expected)} float "
                             f"arrays w000... of the top's shapes)")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ModelFileError(f"{path}: the adapted top weights hold NaN or infinite values")
    top.set_weights([a.astype(np.float32) for a in arrays])


def top_features(top, activations, views: int, *, batch: int = 128) -> np.ndarray:
    """The embeddings (n, dim) of images whose ``views`` activations at the cut are
    ``activations`` (n, views, h, w, c; an array or a memory map): the mean over the views."""
    out = []
    for s in range(0, len(activations), batch):
        a = np.asarray(activations[s:s + batch], np.float32)
        f = np.asarray(top(a.reshape(-1, *a.shape[2:]), training=False))
        out.append(f.reshape(len(a), views, -1).mean(axis=1))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, top.output.shape[-1]), np.float32)


def source_targets(features: np.ndarray, labels: np.ndarray, *, dims: int = TARGET_DIMS, k: int = TARGET_K,
                   temperature: float = TARGET_TEMPERATURE, whiten: float | None = TARGET_WHITEN,
                   rounds: int = TARGET_ROUNDS, seed: int = 0) -> np.ndarray:
    """Each training image's responsibilities over the latent sources (noise, each trait's
    classes), found by the latent head's EM from its user's ``labels`` (n, traits) on the
    standardised ``features``' ``dims`` principal axes, whitened within the sources."""
    from sklearn.decomposition import PCA

    from core.labels import LABELS, TRAITS
    from profiler.models.latent import layout, whitened_sources

    standard = (features - features.mean(0)) / (features.std(0) + 1e-6)
    dims = min(dims, *standard.shape)
    axes = PCA(dims, svd_solver="randomized", random_state=seed).fit(standard).components_.T
    plan = layout(tuple(len(LABELS[t]) for t in TRAITS))
    _, _, sources = whitened_sources(standard, axes, labels, plan, k=k, temperature=temperature,
                                     rounds=rounds, whiten=whiten)
    return sources.responsibilities.astype(np.float32)


def adapt_top(top, activations, targets: np.ndarray, *, views: int, rows: np.ndarray | None = None,
              epochs: int = 3, lr: float = 3e-4, batch: int = 64, seed: int = 0, on_epoch=None) -> list[float]:
    """Train ``top`` (in place) for ``epochs`` so that a linear softmax on its embeddings
    (the mean over ``views``, standardised by the frozen top's statistics) predicts the
    soft ``targets`` (n, sources) of the images whose activations are ``activations``
    (n, views, ...), or of ``activations[rows]`` where ``rows`` (sorted) are given (a memory
    map is then read a batch at a time). Adam at ``lr``, ``batch`` images a step in a seeded order.
    ``on_epoch(epoch, mean_loss, seconds)`` after each epoch. Returns each epoch's mean loss."""
    import tensorflow as tf

    from profiler.backend import import_keras

    keras = import_keras()
    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    rows = np.arange(len(targets)) if rows is None else np.asarray(rows)
    if len(rows) != len(targets):
        raise ValueError(f"{len(targets)} targets for {len(rows)} images")
    start = np.concatenate([top_features(top, activations[rows[s:s + 1024]], views)
                            for s in range(0, len(rows), 1024)])
    mu, sd = start.mean(0), start.std(0) + 1e-3
    dim = start.shape[1]
    head = keras.layers.Dense(targets.shape[1], name="sources")
    head.build((None, dim))
    variables = top.trainable_variables + head.trainable_variables
    optimizer = keras.optimizers.Adam(lr)

    @tf.function
    def step(a, y):
        with tf.GradientTape() as tape:
            f = top(tf.reshape(a, (-1, *a.shape[2:])), training=True)
            f = (tf.reduce_mean(tf.reshape(f, (-1, views, dim)), axis=1) - mu) / sd
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(y, head(f)))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    losses = []
    for epoch in range(epochs):
        t = time.perf_counter()
        order = rng.permutation(len(targets))
        done = []
        for s in range(0, len(order), batch):
            chosen = np.sort(order[s:s + batch])  # sorted: a memory map reads forwards
            done.append(float(step(tf.constant(np.asarray(activations[rows[chosen]], np.float32)),
                                   tf.constant(targets[chosen]))))
        losses.append(float(np.mean(done)))
        if on_epoch is not None:
            on_epoch(epoch + 1, losses[-1], time.perf_counter() - t)
    return losses


class AdaptedEncoder(MultiCropEncoder):
    """The default encoder's two views (whole image, centre crop of 2/3) through float
    EfficientNet-Lite2 whose top's weights are read from ``top_path`` (``save_top``)."""

    def __init__(self, top_path: str | Path):
        from profiler.encoders.efficientnet_lite import EfficientNetLite2Encoder

        super().__init__(EfficientNetLite2Encoder(), ("centre",), suffix="adapted")
        self.top_path = Path(top_path)
        self.features = f"{self.features}+top@{CUT_LAYER}"
        self.description += f"; the top from {CUT_LAYER} adapted to a dataset ({self.top_path.name})"
        self.top_digest = file_digest(self.top_path) if self.top_path.is_file() else None
        if self.top_digest is None:
            raise ModelFileError(f"{self.top_path}: no such adapted top weights file")

    @cached_property
    def identity(self) -> str:
        return f"{self.name}:{self.features}@{file_digest(self.weights_path)}+{self.top_digest}"

    @cached_property
    def top(self):
        """The network's top, its weights those of ``top_path`` (checked against the digest
        the identity names, so a file changed since is refused rather than mixed in)."""
        _, top = split_network(self.base.network)
        if file_digest(self.top_path) != self.top_digest:
            raise ModelFileError(f"{self.top_path}: changed since this encoder was made "
                                 f"(its digest was {self.top_digest})")
        load_top(top, self.top_path)
        return top

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        self.top  # noqa: B018 - the adapted weights are in the network before it runs
        return super().embed(inputs)
