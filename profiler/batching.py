"""Running a network on fixed-size chunks, so a row's result does not depend on its batch.

TensorFlow's CPU kernels can round differently for different batch sizes; running every
call on exactly ``size`` rows (the last chunk padded with zeros) makes each row's output
the same whatever it was batched with.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def padded_chunks(inputs: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(chunk, n_real)``: ``inputs`` in chunks of exactly ``size`` rows, the last zero-padded."""
    for start in range(0, len(inputs), size):
        chunk = inputs[start:start + size]
        n_real = len(chunk)
        if n_real < size:
            chunk = np.concatenate([chunk, np.zeros((size - n_real,) + chunk.shape[1:], chunk.dtype)])
        yield chunk, n_real
