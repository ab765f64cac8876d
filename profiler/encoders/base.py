"""The one small interface every image encoder implements.

An encoder turns a decoded RGB image into a fixed-length float32 embedding with frozen
pretrained weights that come installed with a registry package (nothing is downloaded).
``identity`` names the encoder, its output and a digest of its weights file: embeddings are cached
under it, and a trained head records it so it can refuse embeddings from another one.
"""
from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from profiler.batching import padded_chunks


def file_digest(path: str | Path, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


class Encoder:
    """A frozen image encoder.

    Subclasses set ``name``, ``dim``, ``draft`` (a JPEG may be decoded at reduced scale
    down to this many pixels a side) and ``weights_path``, and implement ``preprocess``
    (one RGB image to the network's input array) and ``_run`` (a batch of inputs to
    embeddings). ``embed`` always runs the network on chunks of exactly ``chunk``
    inputs, the last padded, so an image's embedding does not depend on what it was
    batched with.
    """

    name: str = ""
    #: which output of the network the embedding is (part of the identity)
    features: str = "default"
    dim: int = 0
    draft: int = 256
    chunk: int = 16
    #: what the weights are and where they come from, for reports
    description: str = ""

    @property
    def weights_path(self) -> Path:
        raise NotImplementedError

    @cached_property
    def identity(self) -> str:
        return f"{self.name}:{self.features}@{file_digest(self.weights_path)}"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        raise NotImplementedError

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        """Embeddings (n, dim) float32 of preprocessed inputs (n, ...)."""
        out = [self._run(chunk)[:n_real] for chunk, n_real in padded_chunks(inputs, self.chunk)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, self.dim), np.float32)
