"""Compositing an emoji into an image that looks like a posted photo.

The subject emoji at a random scale, position and rotation, sometimes with one or two
smaller distractors, on a varied background (a colour gradient, smooth colour noise, or
another image enlarged and blurred), in a photo's aspect ratio (1:1, 4:3, 16:9, either way) with the long side between 200
and 600 pixels.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

MIN_SIDE, MAX_SIDE = 200, 600
#: (width, height) shapes of posted photos: square, 4:3 and 16:9 either way
ASPECTS = ((1, 1), (4, 3), (3, 4), (16, 9), (9, 16))
ASPECT_P = (0.35, 0.2, 0.2, 0.15, 0.1)
BACKGROUNDS = ("gradient", "noise", "image")


@functools.lru_cache(maxsize=4096)
def emoji(path: Path) -> Image.Image:
    """An emoji PNG as RGBA (cached per process)."""
    with Image.open(path) as im:
        return im.convert("RGBA")


def _gradient(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    a, b = rng.integers(0, 256, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    t = (np.cos(angle) * x + np.sin(angle) * y)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    small = (a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)


def _noise(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    cells = int(rng.integers(3, 12))
    base = rng.integers(0, 256, 3)
    small = np.clip(base + rng.normal(0, 50, (cells, cells, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)


def _image_background(rng: np.random.Generator, size: tuple[int, int], path: Path) -> Image.Image:
    tint = tuple(int(c) for c in rng.integers(120, 256, 3))
    canvas = Image.new("RGBA", (48, 48), tint + (255,))
    canvas.alpha_composite(emoji(path).resize((48, 48), Image.Resampling.BILINEAR))
    blurred = canvas.convert("RGB").filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.5))))
    return blurred.resize(size, Image.Resampling.BILINEAR)


def _paste(rng: np.random.Generator, canvas: Image.Image, path: Path, scale: tuple[float, float]) -> None:
    side = min(canvas.size) * rng.uniform(*scale)
    # rotate the small original, then scale up: the same picture at a fraction of the cost
    small = emoji(path)
    sprite = small.rotate(float(rng.uniform(-35, 35)), resample=Image.Resampling.BICUBIC, expand=True)
    factor = side / small.width
    sprite = sprite.resize((max(1, int(sprite.width * factor)), max(1, int(sprite.height * factor))),
                           Image.Resampling.BILINEAR)
    x = int(rng.integers(0, max(canvas.width - sprite.width, 0) + 1))
    y = int(rng.integers(0, max(canvas.height - sprite.height, 0) + 1))
    canvas.paste(sprite, (x, y), sprite)


def compose(rng: np.random.Generator, subject: Path, distractors: list[Path], background: Path) -> Image.Image:
    """One posted-photo-like RGB image of ``subject`` (distractors and background are noise)."""
    long_side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    aw, ah = ASPECTS[int(rng.choice(len(ASPECTS), p=ASPECT_P))]
    size = (long_side * aw // max(aw, ah), long_side * ah // max(aw, ah))
    kind = BACKGROUNDS[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
    if kind == "gradient":
        canvas = _gradient(rng, size)
    elif kind == "noise":
        canvas = _noise(rng, size)
    else:
        canvas = _image_background(rng, size, background)
    for path in distractors:
        _paste(rng, canvas, path, (0.12, 0.3))
    _paste(rng, canvas, subject, (0.35, 0.75))
    if rng.random() < 0.03:
        return canvas.convert("L")  # a few grayscale photos
    return canvas
