"""Shared helpers for the benchmark scripts: synthetic photo-like data, timing, machine facts."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photo_like(rng: np.random.Generator, size: int = 400) -> Image.Image:
    """A smooth random image with some texture, so JPEG sizes resemble photos (~20-40 KB)."""
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    im = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(im, float) + noise, 0, 255).astype(np.uint8))


def warm(encoder) -> None:
    """Build or convert (once, cached) and load ``encoder``'s network before anything is
    timed, through its own preprocessing (a multi-crop encoder takes several views an image)."""
    encoder.embed(np.stack([encoder.preprocess(photo_like(np.random.default_rng(0), 256))]))


def plain_set_head(encoder):
    """An untrained set model with the plain head (mean and maximum pooling) over ``encoder``'s
    embeddings: the encoder dominates what profiling costs, and the weights do not change it."""
    from profiler.models.set_head import SetProfiler

    return SetProfiler(encoder.dim, cap=32, encoder=encoder.identity)


def random_sets(model, n: int, images: int = 11) -> np.ndarray:
    """``n`` users of ``images`` random embeddings in a set model's input layout (the last column: present)."""
    x = np.random.default_rng(0).normal(size=(n, model.cap, model.dim + 1)).astype(np.float32)
    x[:, :, -1] = 0
    x[:, :images, -1] = 1
    return x


def make_jpeg_dataset(root: Path, users: int, images: int = 11, size: int = 400, seed: int = 0) -> Path:
    """A dataset folder of ``users`` users with ``images`` JPEGs each (no truth file)."""
    if (root / "images").is_dir() and len(list((root / "images").iterdir())) == users:
        return root
    rng = np.random.default_rng(seed)
    pool = [photo_like(rng, size) for _ in range(40)]
    for u in range(users):
        folder = root / "images" / f"user{u:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(images):
            pool[rng.integers(len(pool))].save(folder / f"{j:02d}.jpg", quality=int(rng.integers(70, 95)))
    return root


def bench_jpegs(users: int) -> Path:
    """The shared benchmark dataset of ``users`` users of 11 JPEGs, made once under /tmp."""
    import tempfile

    return make_jpeg_dataset(Path(tempfile.gettempdir()) / "profiler-bench-jpeg" / f"u{users}", users)


def untrained(model: str, size: int = 64):
    """A freshly initialised Model 1 or Model 2 for ``size`` px volumes (speed needs no training)."""
    from profiler.config import resolve
    from profiler.families import family_of

    return family_of(model).build(resolve("default", overrides={"model": model, "size": size}))


def repeat(fn, runs: int = 3) -> dict:
    """Time ``fn`` ``runs`` times; the median and spread in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs}


def machine() -> dict:
    """CPU model, core count and library versions, for the record."""
    cpu, features = platform.processor(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                features = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
                            if f in flags]
                break
    except OSError:
        pass
    import PIL
    return {"cpu": cpu, "features": " ".join(features) or "unknown",
            "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "numpy": np.__version__, "pillow": PIL.__version__}


def dump(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def figure(stage: str, name: str, samples: list[float], unit: str, **extra) -> dict:
    """One measured figure: its median and spread over ``samples`` (never typed in)."""
    return {"stage": stage, "figure": name, "unit": unit, "median": statistics.median(samples),
            "min": min(samples), "max": max(samples), "runs": len(samples), **extra}


def timed(fn, runs: int = 3, warmup: int = 0) -> list[float]:
    """Seconds for each of ``runs`` calls of ``fn`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def embedding_rates(encoders: dict, x: np.ndarray, runs: int) -> tuple[dict, dict]:
    """Images/s of each encoder on the preprocessed batch ``x``, interleaved over ``runs``
    rounds so that every runtime sees the same machine load, and each one's embeddings."""
    rates, embeddings = {label: [] for label in encoders}, {}
    for _ in range(runs):
        for label, encoder in encoders.items():
            start = time.perf_counter()
            embeddings[label] = encoder.embed(x)
            rates[label].append(len(x) / (time.perf_counter() - start))
    return rates, embeddings


def stage_main(stage_fn, description: str) -> None:
    """Command-line entry of a stage: run it, print its figures, write them as JSON."""
    import argparse

    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--quick", action="store_true", help="fewer users and runs (a smoke test)")
    args = parser.parse_args()
    figures = stage_fn(quick=args.quick)
    for f in figures:
        print(f"{f['stage']:10s} {f['figure']:60s} {f['median']:10.3f} {f['unit']} "
              f"({f['min']:.3f}-{f['max']:.3f}, {f['runs']} runs)", flush=True)
    if args.json:
        dump(args.json, {"machine": machine(), "figures": figures})


def new_users_args(doc: str):
    """The options of the benchmarks that profile new users: DATASET, --users, --rounds, --out."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", type=Path, default=Path("data/sample/test"))
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()
