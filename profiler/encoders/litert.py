"""A Keras encoder run by LiteRT (``ai-edge-litert``) with its XNNPACK CPU kernels.

The encoder's Keras network is converted once with Keras' LiteRT export (TensorFlow's
converter) and kept in the cache directory (``$PROFILER_CACHE_DIR/encoders/``), written
atomically and named by a key of the weights' digest, the mode, the converter's version
and the calibration, so a changed input converts again and nothing stale is run.

Two modes:

- ``float32``: the same network, the same embeddings within float rounding.
- ``int8``: fully integer-quantised (weights per channel, activations per tensor),
  calibrated on ``CALIBRATION_IMAGES`` posted-photo-like images made the way the sample
  data is (emoji on gradients, noise and blurred pictures; ``data_prep.sample.render``),
  seeded, so the conversion is reproducible. EfficientNet-Lite was designed for int8.
  Its embeddings differ from float32's (``bench/encoders.py`` reports by how much).

Each mode is its own encoder (``efficientnet_lite0_int8``, ``efficientnet_lite0_float32``)
with its own identity, so cached embeddings of different modes are never mixed.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import ModelFileError
from profiler.encoders.base import Encoder

MODES = ("float32", "int8")
CALIBRATION_IMAGES = 128
CALIBRATION_SEED = 0
#: bump when the calibration images or the conversion settings change
CONVERSION_VERSION = 1


def encoder_dir() -> Path:
    """Where converted encoders are kept: beside the embedding cache."""
    from profiler.embeddings import default_store_path

    return default_store_path().parent / "encoders"


def calibration_images(count: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED) -> list[Image.Image]:
    """``count`` posted-photo-like RGB images, made as the sample data's are (seeded)."""
    from data_prep.sample.catalog import asset_dir
    from data_prep.sample.render import compose

    assets = sorted(asset_dir().glob("*.png"))
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        subject, background, *distractors = (assets[int(i)] for i in rng.choice(len(assets), 4, replace=False))
        image = compose(rng, subject, distractors[:int(rng.integers(0, 3))], background)
        images.append(image.convert("RGB"))
    return images


class LiteRTEncoder(Encoder):
    """``base`` (an encoder with a Keras ``network``) converted to LiteRT in ``mode``."""

    def __init__(self, base: Encoder, mode: str = "int8"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.base, self.mode = base, mode
        self.name = f"{base.name}_{mode}"
        self.features = base.features
        self.dim = base.dim
        self.draft = base.draft
        self.chunk = base.chunk
        self.description = (f"{base.description}; run by LiteRT (XNNPACK), "
                            + ("fully int8-quantised" if mode == "int8" else "float32"))

    @property
    def weights_path(self) -> Path:
        return self.base.weights_path

    @cached_property
    def key(self) -> str:
        """What the converted file depends on: weights, mode, converter, calibration."""
        from importlib.metadata import version

        from profiler.encoders.base import file_digest

        parts = [file_digest(self.weights_path, 64), self.base.features, self.mode, version("tensorflow"),
                 str(CONVERSION_VERSION), str(CALIBRATION_IMAGES), str(CALIBRATION_SEED)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]

    @cached_property
    def identity(self) -> str:
        return f"{self.name}:{self.features}@{self.key}"

    @property
    def model_path(self) -> Path:
        return encoder_dir() / f"{self.name}-{self.key}.tflite"

    def convert(self) -> Path:
        """The converted model file, converting (once, atomically) if it is not there."""
        path = self.model_path
        if path.is_file():
            return path
        from core.io import atomic_path
        from profiler.backend import import_keras, quiet_stderr

        import_keras()
        import tensorflow as tf

        options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
        if self.mode == "int8":
            inputs = [self.base.preprocess(image)[None].astype(np.float32) for image in calibration_images()]
            options = {"optimizations": [tf.lite.Optimize.DEFAULT],
                       "representative_dataset": lambda: ([x] for x in inputs),
                       "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}}
        with atomic_path(path, suffix=".tflite") as tmp, quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):
            self.base.network.export(str(tmp), format="litert", verbose=False, **options)
        return path

    @cached_property
    def _interpreter(self):
        from ai_edge_litert.interpreter import Interpreter

        from data_prep.cache import default_workers
        from profiler.backend import compute_threads, quiet_stderr

        path = self.convert()
        try:
            with quiet_stderr():  # LiteRT announces its XNNPACK delegate on stderr
                interpreter = Interpreter(model_path=str(path), num_threads=compute_threads() or default_workers())
                entry = interpreter.get_input_details()[0]
                interpreter.resize_tensor_input(entry["index"], [self.chunk, *entry["shape"][1:]])
                interpreter.allocate_tensors()
                interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path}: not a usable LiteRT model ({exc}); delete it and it is "
                                 "converted again") from exc
        return interpreter, entry["index"], interpreter.get_output_details()[0]["index"]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.base.preprocess(image)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        interpreter, source, target = self._interpreter
        interpreter.set_tensor(source, np.ascontiguousarray(batch, np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(target).copy()
