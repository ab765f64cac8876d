"""The prepared cache: every user's decoded images in one memory-mapped ``.npy``.

```
CACHE/
  images.npy    uint8 (n_images, h, w, 3): each user's usable images, back to back
  users.csv     the index: user_id, labels, n_images, n_files, offset, files (JSON)
  skipped.csv   every file left out and why (users with no usable image included)
  meta.json     parameters, dataset fingerprint, label space; written last
```

The cache holds a user's images, not filled volumes: a volume of ``p`` images is
assembled on read (``Cache.volume``), cyclically filled for users with fewer than
``p`` and chosen deterministically or at random among more, so training can draw a
different choice each epoch. Up to ``max_images`` images per user are kept.

The whole folder is built beside its destination and renamed into place, so an
interrupted run leaves nothing a later run would trust. A cache whose fingerprint
(file names, sizes and modification times, the truth file's content, the parameters)
matches the dataset is reused as it is.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_prep.dataset import IMAGE_DIRS, Dataset, User, load_dataset
from core.errors import DataError, ImageError
from data_prep.images import FITS, load_image
from core.io import atomic_dir, atomic_write_text
from core.labels import TRAITS, label_space
from data_prep.volumes import DEFAULT_P, DEFAULT_SIZE, select_indices

log = logging.getLogger("profiler")

CACHE_VERSION = 1
DEFAULT_MAX_IMAGES = 32


@dataclass(frozen=True)
class PrepareConfig:
    """How images are decoded into the cache; part of its fingerprint."""

    height: int = DEFAULT_SIZE
    width: int = DEFAULT_SIZE
    fit: str = "pad"
    draft: bool = True
    max_images: int = DEFAULT_MAX_IMAGES

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, not {self.fit!r}")
        if min(self.height, self.width) < 8:
            raise ValueError(f"image size must be at least 8 pixels, not {self.height}x{self.width}")
        if self.max_images < 1:
            raise ValueError(f"max_images must be at least 1, not {self.max_images}")


@dataclass
class DecodedUser:
    """What decoding one user's files gave: the images, the files used, the files skipped."""

    user_id: str
    images: np.ndarray  # (k, h, w, 3) uint8, k may be 0
    used: list[str]
    skipped: list[tuple[str, str]]  # (file, reason)

    @property
    def count(self) -> int:
        """How many usable images the user has."""
        return len(self.images)


def candidate_order(n_files: int, max_images: int) -> list[int]:
    """Order in which to try a user's files: an even spread of ``max_images`` first."""
    if n_files <= max_images:
        return list(range(n_files))
    first = [int(i) for i in select_indices(n_files, max_images)]
    chosen = set(first)
    return first + [i for i in range(n_files) if i not in chosen]


def decode_user(user: User, config: PrepareConfig) -> DecodedUser:
    """Decode up to ``config.max_images`` usable images of ``user``; never raises for bad files."""
    images: list[np.ndarray] = []
    used: list[str] = []
    skipped: list[tuple[str, str]] = []
    for i in candidate_order(len(user.files), config.max_images):
        if len(images) >= config.max_images:
            break
        path = user.files[i]
        try:
            images.append(
                load_image(path, (config.height, config.width), fit=config.fit, draft=config.draft)
            )
            used.append(path.name)
        except ImageError as exc:
            skipped.append((str(path), exc.reason))
    stack = (
        np.stack(images)
        if images
        else np.zeros((0, config.height, config.width, 3), np.uint8)
    )
    return DecodedUser(user.user_id, stack, used, skipped)


def _decode_job(args: tuple[User, PrepareConfig]) -> DecodedUser:
    return decode_user(*args)


def decoding_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool for ``decode_users``, to reuse across many calls."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(start_method()))


def decode_users(users: list[User], config: PrepareConfig, *, workers: int = 1,
                 pool: ProcessPoolExecutor | None = None):
    """Yield ``DecodedUser`` for each user, in order, decoding in ``workers`` processes.

    Pass ``pool`` (``decoding_pool``) to reuse worker processes across calls.
    """
    jobs = ((u, config) for u in users)
    if pool is not None and len(users) > 1:
        yield from pool.map(_decode_job, jobs, chunksize=4)
    elif workers <= 1 or len(users) < 2:
        yield from map(_decode_job, jobs)
    else:
        with decoding_pool(workers) as own:
            yield from own.map(_decode_job, jobs, chunksize=4)


def start_method() -> str:
    """"fork" (fast start) unless the parent runs TensorFlow's threads, which must not be forked."""
    if "fork" in multiprocessing.get_all_start_methods() and not any(
        name in sys.modules for name in ("tensorflow", "jax", "torch")
    ):
        return "fork"
    return "spawn"


def fingerprint(dataset: Dataset, config: PrepareConfig) -> str:
    """A hash of what the cache is built from: files, their sizes and times, truth, config."""
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, asdict(config)]).encode())
    if dataset.truth_path is not None:
        digest.update(dataset.truth_path.read_bytes())
    for user in dataset.users:
        digest.update(f"\0user:{user.user_id}".encode())
        for path in user.files:
            stat = path.stat()
            digest.update(f"\0{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def default_workers() -> int:
    """Worker processes for decoding: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _is_ours(folder: Path) -> bool:
    """Whether ``folder`` may be replaced: an empty folder, or a cache this tool wrote."""
    if folder.is_dir() and not any(folder.iterdir()):
        return True
    try:
        return "cache_version" in json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _refuse_overlap(out: Path, root: Path) -> None:
    """A cache folder that is the dataset, holds it, or lies among its users' folders would
    replace (or join) the images it is made from: refused."""
    where, data = out.resolve(), Path(root).resolve()
    if data.is_relative_to(where):
        raise DataError(f"{out}: the cache folder would replace the dataset {root} (it is the dataset "
                        "or holds it); choose a folder outside it")
    if any(where.is_relative_to(data / d) for d in IMAGE_DIRS):
        raise DataError(f"{out}: the cache folder is inside the dataset's image folders ({root}); choose "
                        "a folder outside them")


def prepare(
    dataset: str | Path | Dataset,
    out: str | Path,
    *,
    config: PrepareConfig = PrepareConfig(),
    workers: int | None = None,
    missing: str = "error",
    force: bool = False,
    progress: bool = True,
) -> "Cache":
    """Decode a dataset into a cache folder at ``out`` and return it opened.

    Reuses an existing cache built from the same files with the same parameters,
    unless ``force``; ``Cache.reused`` then says so.
    """
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset, missing=missing)
    out = Path(out)
    _refuse_overlap(out, dataset.root)
    stamp = fingerprint(dataset, config)
    if not force and (out / "meta.json").is_file():
        try:
            existing = Cache.open(out)
        except DataError:
            existing = None
        if existing is not None and existing.meta.get("fingerprint") == stamp:
            existing.reused = True
            return existing
    if not dataset.users:
        raise DataError(f"{dataset.root}: no users to prepare")
    if out.exists() and not _is_ours(out):
        raise DataError(f"{out}: exists and is not a profiler cache (no meta.json of ours); it is never "
                        "replaced, even with --force: choose another folder, or empty it")
    workers = default_workers() if workers is None else max(1, workers)
    with atomic_dir(out) as tmp:
        _write_cache(tmp, dataset, config, stamp, workers=workers, progress=progress)
    return Cache.open(out)


def _write_cache(tmp: Path, dataset: Dataset, config: PrepareConfig, stamp: str,
                 *, workers: int, progress: bool) -> None:
    capacity = sum(min(len(u.files), config.max_images) for u in dataset.users)
    shape = (max(capacity, 1), config.height, config.width, 3)
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
    rows, skipped, empty = [], [], []
    offset = 0
    bar = tqdm(total=len(dataset.users), unit="user", desc="decoding", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    labels = {u.user_id: u.labels for u in dataset.users}
    n_files = {u.user_id: len(u.files) for u in dataset.users}
    for decoded in decode_users(dataset.users, config, workers=workers):
        bar.update()
        skipped.extend((decoded.user_id, f, r) for f, r in decoded.skipped)
        k = len(decoded.images)
        if k == 0:
            empty.append(decoded.user_id)
            reason = "no files" if n_files[decoded.user_id] == 0 else "no usable image"
            skipped.append((decoded.user_id, "", f"{reason}: user left out"))
            continue
        images[offset:offset + k] = decoded.images
        row = {"user_id": decoded.user_id}
        row.update(labels[decoded.user_id] or {t: "" for t in TRAITS})
        row.update(n_images=k, n_files=n_files[decoded.user_id], offset=offset,
                   files=json.dumps(decoded.used))
        rows.append(row)
        offset += k
    bar.close()
    images.flush()
    del images
    _shrink_npy(tmp / "images.npy", offset)
    _report_skipped(skipped, empty)
    columns = ["user_id", *TRAITS, "n_images", "n_files", "offset", "files"]
    pd.DataFrame(rows, columns=columns).to_csv(tmp / "users.csv", index=False)
    pd.DataFrame(skipped, columns=["user_id", "file", "reason"]).to_csv(tmp / "skipped.csv", index=False)
    from core import __version__

    meta = {
        "cache_version": CACHE_VERSION,
        "profiler_version": __version__,
        "dataset": str(dataset.root.resolve()),
        "truth": str(dataset.truth_path) if dataset.truth_path else None,
        "fingerprint": stamp,
        "config": asdict(config),
        "labels": label_space(),
        "has_truth": dataset.has_truth,
        "n_users": len(rows),
        "n_images": offset,
        "n_skipped_files": sum(1 for _, f, _ in skipped if f),
        "users_without_images": empty,
        "missing_users": dataset.missing,
        "unlabelled_users": dataset.unlabelled,
    }
    atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2) + "\n")


def _report_skipped(skipped: list[tuple[str, str, str]], empty: list[str], *, shown: int = 5) -> None:
    files = [(u, f, r) for u, f, r in skipped if f]
    for _, path, reason in files[:shown]:
        log.warning("skipped %s: %s", path, reason)
    if len(files) > shown:
        log.warning("... and %d more skipped files (listed in skipped.csv)", len(files) - shown)
    if empty:
        log.warning("%d user(s) have no usable image and are left out: %s",
                    len(empty), ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""))


def _shrink_npy(path: Path, rows: int) -> None:
    """Rewrite the header of an over-allocated ``.npy`` to ``rows`` rows and truncate it."""
    array = np.load(path, mmap_mode="r")
    row_bytes = int(np.prod(array.shape[1:]))
    old_offset = array.offset
    new_shape = (rows,) + array.shape[1:]
    del array
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": new_shape}
    )
    if len(header.getvalue()) == old_offset:
        with open(path, "r+b") as f:
            f.write(header.getvalue())
            f.truncate(old_offset + rows * row_bytes)
        return
    # The header changed length (a different number of digits): copy instead.
    source = np.load(path, mmap_mode="r")
    target = np.lib.format.open_memmap(str(path) + ".shrunk", mode="w+", dtype=np.uint8, shape=new_shape)
    target[:] = source[:rows]
    target.flush()
    del source, target
    os.replace(str(path) + ".shrunk", path)


class Cache:
    """A prepared cache opened for reading; images are memory-mapped, not loaded."""

    def __init__(self, root: Path, meta: dict, index: pd.DataFrame, images: np.ndarray):
        self.root = root
        self.meta = meta
        self.index = index
        self.images = images
        self._offsets = index["offset"].to_numpy(np.int64)
        self._counts = index["n_images"].to_numpy(np.int64)
        #: True when ``prepare`` found this cache up to date and did no work
        self.reused = False

    def summary(self) -> str:
        """One line saying what the cache holds."""
        meta = self.meta
        state = "up to date, reused" if self.reused else "prepared"
        return (f"{self.root}: {state}: {meta['n_users']} users, {meta['n_images']} images "
                f"of {self.image_size[0]}x{self.image_size[1]} ({meta['n_skipped_files']} files "
                f"skipped, {len(meta['users_without_images'])} users without a usable image)")

    @classmethod
    def open(cls, root: str | Path) -> "Cache":
        """Open a cache folder; raises ``DataError`` if it is not a complete cache."""
        root = Path(root)
        meta_path = root / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{root}: not a prepared cache (no meta.json); run 'profiler prepare'")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{meta_path}: unreadable cache metadata: {exc}") from exc
        if meta.get("cache_version") != CACHE_VERSION:
            raise DataError(f"{root}: cache version {meta.get('cache_version')} is not "
                            f"{CACHE_VERSION}; prepare it again")
        try:
            index = pd.read_csv(root / "users.csv", dtype={"user_id": str, **{t: str for t in TRAITS}},
                                keep_default_na=False)
            images = np.load(root / "images.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{root}: damaged cache ({exc}); prepare it again") from exc
        if len(index) != meta["n_users"] or images.shape[0] != meta["n_images"]:
            raise DataError(f"{root}: damaged cache (sizes disagree with meta.json); prepare it again")
        return cls(root, meta, index, images)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def user_ids(self) -> list[str]:
        return self.index["user_id"].tolist()

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])

    @property
    def has_truth(self) -> bool:
        return bool(self.meta["has_truth"])

    def labels(self, trait: str) -> np.ndarray:
        """Class indices of ``trait`` for every user, in cache order."""
        if not self.has_truth:
            raise DataError(f"{self.root}: the dataset had no truth file, so there are no labels")
        names = self.meta["labels"][trait]
        return self.index[trait].map({n: i for i, n in enumerate(names)}).to_numpy(np.int64)

    def user_images(self, i: int) -> np.ndarray:
        """All stored images of user ``i`` (k, h, w, 3), as a memory-mapped view."""
        start = self._offsets[i]
        return self.images[start:start + self._counts[i]]

    def volume(self, i: int, p: int = DEFAULT_P, *, rng: np.random.Generator | None = None) -> np.ndarray:
        """The (p, h, w, 3) volume of user ``i``; a random choice and order if ``rng``."""
        idx = self._offsets[i] + select_indices(int(self._counts[i]), p, rng=rng)
        return np.asarray(self.images[idx])

    def real_counts(self, p: int = DEFAULT_P) -> np.ndarray:
        """How many of each user's ``p`` volume slots hold a distinct real image."""
        return np.minimum(self._counts, p)
