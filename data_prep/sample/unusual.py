"""Users made of images unlike the sample data's, to check the out-of-distribution score.

Three kinds: solid colours, uniform noise, and photographs (random crops of the sample
images that ship with scikit-learn, ``china.jpg`` and ``flower.jpg``, and matplotlib,
``grace_hopper.jpg``, so nothing is downloaded). Each user gets 6-11 PNG images of one
kind at random sizes. ``make_unusual_users`` writes a dataset folder
(``ROOT/images/ood-KIND-NNN/``) that ``profiler predict`` reads like any other.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("solid", "noise", "photo")


def photographs() -> list[Image.Image]:
    """The packages' sample photographs, decoded."""
    import matplotlib
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    paths = [folder / "china.jpg", folder / "flower.jpg",
             Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    return [Image.open(p).convert("RGB") for p in paths]


def ood_image(kind: str, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    width, height = (int(v) for v in rng.integers(40, 400, size=2))
    if kind == "solid":
        return Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    if kind == "noise":
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    photo = photos[int(rng.integers(len(photos)))]
    w = int(rng.integers(photo.width // 4, photo.width))
    h = int(rng.integers(photo.height // 4, photo.height))
    x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
    return photo.crop((x, y, x + w, y + h)).resize((width, height))


def make_unusual_users(root: Path, per_kind: int, *, seed: int = 0) -> dict[str, str]:
    """A dataset folder at ``root`` with ``per_kind`` users of each kind; returns user id -> kind.
    Deterministic for a seed; the images of an existing folder are rewritten."""
    rng = np.random.default_rng(seed)
    photos = photographs()
    kinds = {}
    for kind in KINDS:
        for i in range(per_kind):
            user = f"ood-{kind}-{i:03d}"
            folder = Path(root) / "images" / user
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(int(rng.integers(6, 12))):
                ood_image(kind, rng, photos).save(folder / f"{j:02d}.png")
            kinds[user] = kind
    return kinds
