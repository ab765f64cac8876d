"""Small synthetic datasets and odd image files for the tests."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SPANISH = {"female": "mujer", "male": "hombre", "center": "centro", "north": "norte",
           "student": "estudiante", "arts": "arte"}


def solid(color, size=(16, 16), mode="RGB") -> Image.Image:
    """A solid image; ``size`` is (width, height) as Pillow has it."""
    return Image.new(mode, size, color)


def save(im: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, **kw)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255),
          (255, 0, 255), (128, 128, 128), (255, 128, 0), (0, 128, 255), (128, 0, 255),
          (64, 200, 64), (200, 64, 64), (10, 20, 30)]


def make_dataset(root: Path, users: dict[str, int], *, labels: dict[str, tuple] | None = None,
                 truth: str | None = "txt", image_dir: str = "images", size=(16, 16)) -> Path:
    """A dataset folder: ``users`` maps user id to its number of PNG images.

    Image j of every user is solid ``COLORS[j]``; labels default to cycling values.
    """
    from core.labels import LABELS

    lines = []
    for n, (uid, count) in enumerate(users.items()):
        folder = root / image_dir / uid
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(count):
            save(solid(COLORS[j % len(COLORS)], size), folder / f"img{j:02d}.png")
        g, l, o = (labels or {}).get(uid) or (
            LABELS["gender"][n % 2], LABELS["location"][n % 6], LABELS["occupation"][n % 8])
        lines.append((uid, g, l, o))
    if truth == "txt":
        (root / "truth.txt").write_text("".join(":::".join(r) + "\n" for r in lines))
    elif truth == "csv":
        (root / "truth.csv").write_text(
            "user_id,gender,location,occupation\n" + "".join(",".join(r) + "\n" for r in lines))
    return root


class TinyEncoder:
    """A stand-in for a pretrained encoder: a fixed random projection of a 4x4 thumbnail.

    Deterministic and fast, so tests of the set model need no real network. Registered
    as encoder "tiny" by ``tests/conftest.py``.
    """

    name = "tiny"
    dim = 8
    draft = 16
    identity = "tiny@test"
    description = "test encoder"
    calls = 0  # images embedded, across instances

    def preprocess(self, image):
        return np.asarray(image.resize((4, 4)), np.float32).ravel() / 255.0

    def embed(self, inputs):
        TinyEncoder.calls += len(inputs)
        weights = np.random.default_rng(0).normal(size=(48, self.dim)).astype(np.float32)
        return np.tanh(inputs @ weights)


def register() -> None:
    """Make encoder "tiny" known (``tests/conftest.py`` and, via ``PROFILER_PLUGINS``, Spark's workers)."""
    from profiler.encoders import register_encoder

    register_encoder("tiny", TinyEncoder)


def interrupt_after(batches: int):
    """A Keras callback that raises ``KeyboardInterrupt`` after ``batches`` training batches, as a kill would."""
    import keras

    class Interrupt(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.count = 0

        def on_train_batch_end(self, batch, logs=None):
            self.count += 1
            if self.count >= batches:
                raise KeyboardInterrupt

    return Interrupt()


def tiny_cache(root: Path, users: int):
    """A prepared 16 px cache of ``users`` users with 1 to 5 images each (labels cycling)."""
    from data_prep.cache import PrepareConfig, prepare

    make_dataset(root / "d", {f"u{i:02d}": (i % 5) + 1 for i in range(users)})
    return prepare(root / "d", root / "cache", config=PrepareConfig(height=16, width=16), workers=1, progress=False)


#: a set model on the "tiny" encoder that trains in seconds
TINY_SET = ("--epochs", 2, "--batch-size", 4, "-q", "--set", "encoder=tiny", "--set", "hidden=[4]",
            "--set", "dense=[4]", "--set", "cap=12")


def train_tiny_set(data: Path, run_dir: Path, store: Path, *extra) -> Path:
    """Train a tiny set model on ``data`` with ``profiler train`` (``extra``: more options); its model file."""
    from click.testing import CliRunner

    from cli.main import main

    result = CliRunner().invoke(main, [str(a) for a in ("train", data, "--run-dir", run_dir, *TINY_SET,
                                                        "--embeddings", store, *extra)])
    assert result.exit_code == 0, result.output
    return Path(run_dir) / "model.keras"
