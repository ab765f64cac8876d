"""The paper's family: a 3D CNN over a volume of ``p`` decoded images per user.

Training reads a prepared image cache (``data_prep.cache``); a user's volume is built
by ``data_prep.volumes.build_volume`` in training and at prediction time alike: fewer
than ``p`` images are repeated cyclically, more give an even spread (validation,
prediction) or a random choice in random order (training, ``--tta``). Training also
flips single images at random.
"""
from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np

from core.errors import DataError
from data_prep.volumes import build_volume
from profiler.families.base import Family, Reader
from profiler.models.choices import VARIANTS

#: images decoded per user for ``--tta`` (the random choices are drawn among these)
TTA_MAX_IMAGES = 32


def user_volumes(images: np.ndarray, p: int, rng: np.random.Generator | None = None,
                 draws: int = 1) -> np.ndarray:
    """``draws`` volumes (draws, p, h, w, 3) of one user's images; random choices if ``rng``."""
    return np.stack([build_volume(images, p, rng=rng)[0] for _ in range(draws)])


class VolumeReader(Reader):
    """Decodes each user's files at the model's image size and fit; builds their volumes."""

    fills = True
    processes = True

    def __init__(self, info: dict):
        self.info = info
        self.max_images = int(info["p"])

    def decode_config(self, tta: int):
        from data_prep.cache import PrepareConfig

        return PrepareConfig(height=int(self.info["height"]), width=int(self.info["width"]),
                             fit=self.info.get("fit") or "pad",
                             max_images=self.max_images if tta <= 1 else max(self.max_images, TTA_MAX_IMAGES))

    def featurize(self, users, tta, *, workers=1, pool=None):
        from data_prep.cache import decode_users

        return list(decode_users(users, self.decode_config(tta), workers=workers, pool=pool))

    def inputs(self, user, tta, seed):
        if tta <= 1:
            return user_volumes(user.images, self.max_images)
        rng = np.random.default_rng([seed, zlib.crc32(user.user_id.encode())])
        return user_volumes(user.images, self.max_images, rng, draws=tta)

    def ablations(self, user, drops=None):
        """Occlusion: every slot of the volume holding an image taken out is set to black."""
        from data_prep.volumes import select_indices

        slots = select_indices(len(user.images), self.max_images)
        full = user.images[slots]
        shown = list(dict.fromkeys(int(i) for i in slots))  # each image once, in volume order
        drops = [()] + [(j,) for j in range(len(shown))] if drops is None else drops
        stack = []
        for drop in drops:
            occluded = full.copy()
            occluded[np.isin(slots, [shown[j] for j in drop])] = 0
            stack.append(occluded)
        return np.stack(stack), [user.used[j] for j in shown]


class VolumeFamily(Family):
    name = "volumes"
    models = VARIANTS

    def training_data(self, source, config, *, cache_dir=None, store=None, workers=None,
                      allow_missing=False, progress=True):
        """``source`` itself if it is a prepared cache, else ``source`` prepared into ``cache_dir``."""
        from data_prep.cache import Cache, PrepareConfig, prepare
        from data_prep.dataset import find_truth

        source = Path(source)
        if (source / "meta.json").is_file():
            return Cache.open(source)
        if find_truth(source) is None:
            raise DataError(f"{source}: no truth.txt, truth.csv or truth.jsonl; training needs labels")
        if cache_dir is None:
            raise ValueError("preparing a dataset for the 3D CNNs needs a cache_dir")
        prepared = PrepareConfig(height=config.size, width=config.size, fit=config.fit,
                                 max_images=config.max_images)
        return prepare(source, cache_dir, config=prepared, workers=workers,
                       missing="warn" if allow_missing else "error", progress=progress)

    def accepts(self, data):
        from data_prep.cache import Cache

        return isinstance(data, Cache)

    def fit_config(self, config, data):
        """The cache decides the images: record the size and fit really used."""
        size, fit = data.image_size, data.meta["config"]["fit"]
        if (config.size, config.size) == size and config.fit == fit:
            return config
        return dataclasses.replace(config, size=size[0], fit=fit)

    def build(self, config, data=None, positions=None):
        from profiler.models.cnn3d import Cnn3dProfiler

        height, width = data.image_size if data is not None else (config.size, config.size)
        return Cnn3dProfiler(config.model, p=config.p, height=height, width=width,
                             filters=tuple(config.filters) if config.filters else None,
                             dense=tuple(config.dense), dropout=config.dropout,
                             batch_norm=config.batch_norm, pooling=config.pooling, image_fit=config.fit)

    def batch(self, data, chosen, config, rng):
        sample = rng if config.sample_images else None
        batch = np.stack([build_volume(data.user_images(int(i)), config.p, rng=sample)[0] for i in chosen])
        if rng is not None and config.flip:
            flips = rng.random(batch.shape[:2]) < 0.5
            batch[flips] = batch[flips][:, :, ::-1]
        return batch

    def input_spec(self, data, config):
        import tensorflow as tf

        h, w = data.image_size
        return tf.TensorSpec((None, config.p, h, w, 3), tf.uint8)

    def runner(self, model):
        """A user's item for the out-of-distribution score: the average of every conv block's
        output over the volume (before pooling, after ReLU) and the pooled vector, each scaled to
        unit length, side by side (features from several depths, as in Lee et al., *A Simple
        Unified Framework for Detecting Out-of-Distribution Samples*, NeurIPS 2018). The
        pooled vector alone told the demo's Model 2 from unusual users with ROC-AUC 0.78; its
        early blocks see what a solid colour or noise is (0.97 with all of them)."""
        from core.labels import TRAITS
        from profiler.backend import import_keras

        keras = import_keras()
        depths = [keras.layers.GlobalAveragePooling3D()(layer.output) for layer in model.layers
                  if layer.name.startswith("conv") and layer.name.endswith("_relu")]
        both = keras.Model(model.inputs, [model.get_layer(t).output for t in TRAITS]
                           + depths + [model.get_layer("pool").output])

        def run(chunk):
            out = both.predict_on_batch(chunk)
            parts = [np.asarray(v, np.float64).reshape(len(chunk), -1) for v in out[len(TRAITS):]]
            joined = np.concatenate([v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
                                     for v in parts], axis=1) / np.sqrt(len(parts))
            return dict(zip(TRAITS, out[:len(TRAITS)])), list(joined[:, None, :])
        return run

    def reader(self, info, *, name="model", encoder=None, store=None, model=None):
        return VolumeReader(info)


VOLUMES = VolumeFamily()
