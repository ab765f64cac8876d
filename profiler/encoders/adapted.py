"""EfficientNet-Lite2 with its last block adapted to a dataset: the encoder's top, fine-tuned.

The frozen ImageNet encoder caps what any reader of its embeddings can get (the instance
probe's figures in the README). Adapting its top to the dataset's images raises that cap
where there are enough users (``bench/adapt.py``: at the paper's size the probe's share of
the Bayes rule rose by 2-8 points in three epochs on two seeds; at the demo's size no
target a model can get from user labels helped), but the default head on the adapted
embeddings has not followed: +1 to +4 points on gender, up to -6 on occupation
(``results/adapt.md``). Experimental, off by default (``train --adapt-epochs``). The network is cut before its
last MBConv block (``split_network``: the bottom, frozen, and the top, the last block and
the head convolution, 1.2 M weights, batch normalisation frozen); the top is trained on
the images' activations at the cut, computed once, towards each training image's
*sources* as the latent head's EM finds them from the users' labels (``source_targets``,
the same EM as training's ``fill_sources``; ``adapt_top``).

``AdaptedEncoder`` is the default encoder's views (the whole image and its centre crop of
2/3, averaged) through the float network with an adapted top: its weights are kept in the
model file (``SetProfiler``'s ``encoder_top``) or in a ``.npz`` file (``save_top``; read
without pickles, every array's shape checked). Its identity names the base weights' digest
and a digest of the top's weights, so embeddings of the frozen encoder or of another
adaptation are never mixed with its own.
"""
from __future__ import annotations

import logging
import sys
import time
import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np

from core.errors import ConfigError, ModelFileError
from core.labels import LABELS, TRAITS
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


def read_top(path: str | Path) -> list[np.ndarray]:
    """The arrays of ``save_top``'s file ``path``; ``ModelFileError`` naming the file if it is
    not one (no pickles are read; the arrays must be float, finite, named w000, w001, ...)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as stored:
            names = sorted(stored.files)
            arrays = [stored[n] for n in names] if names == [f"w{i:03d}" for i in range(len(names))] else None
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such adapted top weights file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(f"{path}: not an adapted top weights file ({type(exc).__name__}: {exc})"[:400]) from None
    if not arrays or any(a.dtype.kind != "f" for a in arrays):
        raise ModelFileError(f"{path}: not an adapted top weights file (float arrays w000, w001, ... expected)")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ModelFileError(f"{path}: the adapted top weights hold NaN or infinite values")
    return [a.astype(np.float32) for a in arrays]


def set_top(top, arrays: list[np.ndarray], name: str = "the adapted top weights") -> None:
    """Give ``top`` the weights ``arrays`` (in ``top.weights`` order), their shapes checked."""
    expected = [tuple(w.shape) for w in top.weights]
    if [tuple(np.shape(a)) for a in arrays] != expected:
        raise ModelFileError(f"{name}: not the weights of EfficientNet-Lite2's top ({len(arrays)} arrays; "
                             f"expected {len(expected)} of the top's shapes)")
    top.set_weights([np.asarray(a, np.float32) for a in arrays])


def weights_digest(arrays: list[np.ndarray], length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of the arrays' shapes and float32 values."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, np.float32)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:length]


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
              epochs: int = 3, lr: float = 3e-4, batch: int = 64, seed: int = 0, on_epoch=None,
              progress: bool = False, frozen: np.ndarray | None = None) -> list[float]:
    """Train ``top`` (in place) for ``epochs`` so that a linear softmax on its embeddings
    (the mean over ``views``, standardised by the frozen top's statistics) predicts the
    soft ``targets`` (n, sources) of the images whose activations are ``activations``
    (n, views, ...), or of ``activations[rows]`` where ``rows`` are given (a memory map is
    then read a batch at a time). Adam at ``lr``, ``batch`` images a step in a seeded order.
    ``on_epoch(epoch, mean_loss, seconds)`` after each epoch; ``progress``: a bar of the steps
    on stderr; ``frozen``: the frozen top's embeddings of those images, where the caller has
    them (computed here otherwise). Returns each epoch's mean loss."""
    import tensorflow as tf
    from tqdm import tqdm

    from profiler.backend import import_keras
    from profiler.training import set_determinism

    keras = import_keras()
    set_determinism(seed)  # the same weights from the same seed, as training's
    rng = np.random.default_rng(seed)
    rows = np.arange(len(targets)) if rows is None else np.asarray(rows)
    if len(rows) != len(targets):
        raise ValueError(f"{len(targets)} targets for {len(rows)} images")
    start = frozen if frozen is not None else np.concatenate(
        [top_features(top, activations[rows[s:s + 1024]], views) for s in range(0, len(rows), 1024)])
    mu, sd = start.mean(0), start.std(0) + 1e-3
    dim = start.shape[1]
    head = keras.layers.Dense(targets.shape[1], name="sources",
                              kernel_initializer=keras.initializers.GlorotUniform(seed=seed))
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
    steps = -(-len(targets) // batch)
    bar = tqdm(total=steps * epochs, unit="step", desc="adapting the encoder's top", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    for epoch in range(epochs):
        t = time.perf_counter()
        order = rng.permutation(len(targets))
        done = []
        for s in range(0, len(order), batch):
            chosen = np.sort(order[s:s + batch])
            done.append(float(step(tf.constant(np.asarray(activations[rows[chosen]], np.float32)),
                                   tf.constant(targets[chosen]))))
            bar.update(1)
        losses.append(float(np.mean(done)))
        if on_epoch is not None:
            on_epoch(epoch + 1, losses[-1], time.perf_counter() - t)
    bar.close()
    return losses


class AdaptedEncoder(MultiCropEncoder):
    """The default encoder's two views (whole image, centre crop of 2/3) through float
    EfficientNet-Lite2 whose top has the weights ``arrays`` (``top.weights`` order; a model
    file keeps them, ``from_file`` reads ``save_top``'s file)."""

    def __init__(self, arrays: list[np.ndarray], source: str = "adapted top weights"):
        from profiler.encoders.efficientnet_lite import EfficientNetLite2Encoder

        super().__init__(EfficientNetLite2Encoder(), ("centre",), suffix="adapted")
        self.arrays = [np.asarray(a, np.float32) for a in arrays]
        self.source = source
        self.features = f"{self.features}+top@{CUT_LAYER}"
        self.description += f"; the top from {CUT_LAYER} adapted to a dataset"
        self.top_digest = weights_digest(self.arrays)

    @classmethod
    def from_file(cls, path: str | Path) -> "AdaptedEncoder":
        return cls(read_top(path), str(path))

    @cached_property
    def identity(self) -> str:
        return f"{self.name}:{self.features}@{file_digest(self.weights_path)}+{self.top_digest}"

    @cached_property
    def top(self):
        """The network's top, with the adapted weights."""
        _, top = split_network(self.base.network)
        set_top(top, self.arrays, self.source)
        return top

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        self.top  # noqa: B018 - the adapted weights are in the network before it runs
        return super().embed(inputs)


class _NoStore:
    """An embedding store that knows nothing and keeps nothing (``embed_users`` then embeds
    every image it chooses, each once)."""

    def get(self, encoder, digests):
        return {}

    def put(self, encoder, entries):
        pass


class _Recorder(MultiCropEncoder):
    """The two views' activations at the cut, written to the memory map ``rows`` as they are
    computed; the "embedding" handed back is the image's row, so that ``embed_users`` chooses
    a user's images exactly as training's embedding does."""

    identity = "activations at the cut (not stored)"

    def __init__(self, base, bottom, rows: np.ndarray):
        super().__init__(base, ("centre",), suffix="adapted")
        self.bottom, self.rows, self.count, self.dim = bottom, rows, 0, 1
        self.name = "efficientnet_lite2 to the cut, for adapting"  # the progress bar's

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        from profiler.batching import padded_chunks

        flat = inputs.reshape(-1, *inputs.shape[2:])
        out = [np.asarray(self.bottom(chunk, training=False))[:k] for chunk, k in padded_chunks(flat, self.chunk)]
        n = len(inputs)
        if self.count + n > len(self.rows):
            raise RuntimeError("more images than the activations' room")  # the room is counted in advance
        self.rows[self.count:self.count + n] = np.concatenate(out).reshape(n, self.views, *out[0].shape[1:])
        self.count += n
        return np.arange(self.count - n, self.count, dtype=np.float32)[:, None]


def adaptation_key(dataset, config) -> str:
    """What an adaptation depends on: the base weights, the settings, and the dataset's users,
    labels and files (names, sizes, modification times)."""
    import hashlib
    import json

    from profiler.encoders.efficientnet_lite import EfficientNetLite2Encoder

    h = hashlib.sha256(json.dumps([file_digest(EfficientNetLite2Encoder().weights_path), CUT_LAYER,
                                   config.adapt_epochs, config.adapt_learning_rate, config.seed,
                                   config.val_share, max(config.max_images, config.cap),
                                   [TARGET_DIMS, TARGET_K, TARGET_TEMPERATURE, TARGET_WHITEN, TARGET_ROUNDS]]).encode())
    for user in dataset.users:
        h.update(json.dumps([user.user_id, user.labels]).encode())
        for path in user.files:
            stat = path.stat()
            h.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def adapt_encoder(dataset, config, store, *, work: Path, progress: bool = True) -> AdaptedEncoder:
    """The encoder adapted to ``dataset``'s training users (``config.adapt_epochs`` epochs).

    1. Every image training will read (``embed_users``' choice) is run once through the
       bottom; the two views' activations at the cut go to a temporary ``.npy`` in ``work``
       (about 135 kB an image, float32; removed at the end).
    2. The users are split as training will split them (``split_indices``: the validation
       users' images are never trained on); the frozen top's embeddings of the training
       users' images give their sources by the latent head's EM (``source_targets``).
    3. The top is trained towards them (``adapt_top``) and saved in ``work`` as
       ``adapted-top-KEY.npz`` (``adaptation_key``), so that ``--resume`` reuses it.
    4. Every recorded image's adapted embedding goes into ``store`` under the adapted
       encoder's identity, so training reads them without running the network again.
    """
    from core.io import scratch_path
    from profiler.embeddings import EmbeddedData, content_digest, embed_users
    from profiler.encoders.efficientnet_lite import EfficientNetLite2Encoder
    from profiler.training import split_indices

    work = Path(work)
    saved = work / f"adapted-top-{adaptation_key(dataset, config)}.npz"
    if saved.is_file():
        log.info("adapted encoder top reused from %s", saved)
        return AdaptedEncoder.from_file(saved)
    base = EfficientNetLite2Encoder()
    bottom, top = split_network(base.network)
    max_images = max(config.max_images, config.cap)
    room = sum(min(len(u.files), max_images) for u in dataset.users)
    work.mkdir(parents=True, exist_ok=True)
    # named for this process; a killed run's is removed by the next run here (core.io)
    scratch = scratch_path(work / f"adapt-activations-{saved.stem[12:]}.npy", ".npy")
    try:
        rows = np.lib.format.open_memmap(scratch, "w+", np.float32,
                                         (max(room, 1), 2, *bottom.output.shape[1:]))
        recorder = _Recorder(base, bottom, rows)
        chosen = embed_users(dataset.users, recorder, _NoStore(), max_images=max_images, progress=progress)
        kept = [(u, e) for u, e in zip(dataset.users, chosen) if e.count]
        if not kept:
            from core.errors import DataError

            raise DataError(f"{dataset.root}: no usable image to adapt the encoder on")
        order = np.concatenate([e.vectors[:, 0] for _, e in kept]).astype(np.int64)
        counts = np.array([e.count for _, e in kept])
        frozen = top_features(top, rows[:recorder.count], 2)[order]
        labels = {t: np.array([LABELS[t].index(u.labels[t]) for u, _ in kept]) for t in TRAITS}
        data = EmbeddedData(dataset.root, "frozen top", frozen.shape[1], [u.user_id for u, _ in kept], frozen,
                            counts, labels)
        train, _ = split_indices(data, config.val_share, config.seed)
        images = np.concatenate([np.arange(data.offsets[i], data.offsets[i] + counts[i]) for i in train])
        owner = np.repeat(train, counts[train])
        targets = source_targets(frozen[images], np.stack([labels[t][owner] for t in TRAITS], axis=1),
                                 seed=config.seed)

        def report(epoch, loss, seconds):
            log.info("adapting the encoder: epoch %d of %d, loss %.3f (%.0f s)", epoch, config.adapt_epochs,
                     loss, seconds)

        adapt_top(top, rows, targets, views=2, rows=order[images], epochs=config.adapt_epochs,
                  lr=config.adapt_learning_rate, seed=config.seed, on_epoch=report, progress=progress,
                  frozen=frozen[images])
        if not all(np.isfinite(w).all() for w in top.get_weights()):
            raise ConfigError(f"adapting the encoder diverged (its weights are no longer finite) at learning "
                              f"rate {config.adapt_learning_rate}; try a smaller adapt_learning_rate")
        encoder = AdaptedEncoder(top.get_weights(), str(saved))
        adapted = top_features(top, rows[:recorder.count], 2)
        for user, e in kept:
            path_of = {p.name: p for p in user.files}
            store.put(encoder.identity, {content_digest(path_of[name]): adapted[int(row)]
                                         for name, row in zip(e.used, e.vectors[:, 0])})
        save_top(top, saved)
        return encoder
    finally:
        scratch.unlink(missing_ok=True)
