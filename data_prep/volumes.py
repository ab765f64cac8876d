"""Turning a user's images into one volume of shape (p, h, w, 3).

Image order carries no meaning in this task. The stable default order is the sorted
order of the file names; choices and fills below are made on positions in that order.

- Fewer than ``p`` images: repeat them cyclically (1, 2, 3, 1, 2, 3, ...) and keep the
  count of real images beside the volume.
- More than ``p``: evaluation takes ``p`` evenly spaced images (first and last always
  included), so the choice covers the whole set; training draws ``p`` at random.
"""
from __future__ import annotations

import numpy as np

DEFAULT_P = 11
DEFAULT_SIZE = 64


def select_indices(n: int, p: int, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """Positions of the ``p`` images that make a volume out of ``n`` available.

    Deterministic when ``rng`` is None; a random choice (without replacement when
    ``n >= p``, in random order) otherwise.
    """
    if n <= 0:
        raise ValueError("a user with no images cannot make a volume")
    if p <= 0:
        raise ValueError(f"p must be positive, not {p}")
    if n >= p:
        if rng is not None:
            return rng.choice(n, size=p, replace=False)
        return np.linspace(0, n - 1, p).round().astype(np.int64)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return order[np.arange(p) % n]


def build_volume(
    images: np.ndarray, p: int = DEFAULT_P, *, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, int]:
    """Stack ``images`` (n, h, w, 3) into a (p, h, w, 3) volume; return it and the real count."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape (n, h, w, 3), got {images.shape}")
    n = images.shape[0]
    idx = select_indices(n, p, rng=rng)
    return images[idx], min(n, p)
