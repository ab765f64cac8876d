"""Image embeddings from a frozen encoder: computed once per image, cached on disk.

The cache (``EmbeddingStore``) is one SQLite file keyed by the SHA-256 of an image
file's bytes and the encoder's identity (name and weights digest), so retraining,
re-predicting, and new users who post an image already seen cost nothing twice, and a
renamed or copied file is still a hit. Files that cannot be used are remembered too,
with the reason. The default file is ``$PROFILER_CACHE_DIR/embeddings.sqlite``
(``~/.cache/profiler`` when unset); SQLite makes it safe to share between processes.

``embed_users`` gives each user the embeddings of up to ``max_images`` usable images,
chosen as the 3D models' decoder chooses them (an even spread first, then the rest);
``EmbeddedData`` holds a labelled dataset's embeddings for training.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data_prep.cache import DEFAULT_MAX_IMAGES, candidate_order
from data_prep.dataset import Dataset, User
from core.errors import DataError, ImageError, listing
from data_prep.images import open_rgb
from core.labels import LABELS, TRAITS

log = logging.getLogger("profiler")
STORE_NAME = "embeddings.sqlite"
#: seconds a process waits on another's hold of the embedding cache before giving up
OPEN_TIMEOUT = 60
#: images embedded per network call group (bounds memory: ~0.6 MB an image at 224 px)
EMBED_CHUNK = 128
#: the largest size of an embedding's value that a cache may hold (the encoders' are below
#: 100; a crafted 1e38 overflowed the head's standardisation into a traceback)
MAX_VALUE = 1e6


def default_store_path() -> Path:
    root = os.environ.get("PROFILER_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "profiler"
    return Path(root) / STORE_NAME


class EmbeddingStore:
    """Embeddings by (encoder identity, file content digest), in one SQLite file.

    ``hits`` and ``misses`` count lookups since opening.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_store_path()
        if self.path.exists() and not self.path.is_file():  # SQLite would leave its journal beside a device
            raise DataError(f"{self.path}: cannot open the embedding cache: not a plain file (a folder, "
                            "device or pipe)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=OPEN_TIMEOUT, check_same_thread=False)
            self._set_up()
        except (OSError, sqlite3.Error) as exc:
            raise DataError(f"{self.path}: cannot open the embedding cache: {exc}") from exc
        self.hits = 0
        self.misses = 0

    def _set_up(self) -> None:
        """WAL mode and the table, retried while another process sets up the same new file:
        SQLite answers "database is locked" at once, not after its busy timeout, to a
        connection that would have to wait on another's change of journal mode or schema
        (several Spark workers opening one new cache did; ``tests/test_embeddings.py``)."""
        deadline = time.monotonic() + OPEN_TIMEOUT
        pause = 0.01
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS embeddings (encoder TEXT NOT NULL, "
                                 "digest BLOB NOT NULL, vector BLOB, reason TEXT, "
                                 "PRIMARY KEY (encoder, digest)) WITHOUT ROWID")
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(2 * pause, 0.5)

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def get(self, encoder: str, digests: list[bytes]) -> dict[bytes, np.ndarray | str]:
        """Known entries among ``digests``: a float32 vector, or the reason the file is unusable."""
        found: dict[bytes, np.ndarray | str] = {}
        unique = list(dict.fromkeys(digests))
        for start in range(0, len(unique), 500):
            part = unique[start:start + 500]
            rows = self._db.execute(
                f"SELECT digest, vector, reason FROM embeddings WHERE encoder = ? AND digest IN "
                f"({','.join('?' * len(part))})", [encoder, *part])
            for digest, vector, reason in rows:
                found[digest] = reason if vector is None else np.frombuffer(vector, np.float32)
        self.hits += len(found)
        self.misses += len(unique) - len(found)
        return found

    def put(self, encoder: str, entries: dict[bytes, np.ndarray | str]) -> None:
        rows = [(encoder, d, None, v) if isinstance(v, str) else
                (encoder, d, np.ascontiguousarray(v, np.float32).tobytes(), None)
                for d, v in entries.items()]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)

    def count(self, encoder: str | None = None) -> int:
        if encoder is None:
            return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM embeddings WHERE encoder = ?", [encoder]).fetchone()[0]


def content_digest(path: Path) -> bytes:
    """SHA-256 of a file's bytes (raises ``ImageError`` if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").digest()
    except OSError as exc:
        raise ImageError(path, f"cannot read: {exc.strerror or exc}") from exc


def _prepare(encoder, path: Path) -> np.ndarray | str:
    try:
        return encoder.preprocess(open_rgb(path, encoder.draft))
    except ImageError as exc:
        return exc.reason


def compute_embeddings(encoder, paths: list[Path], *, progress: bool = False,
                       threads: int = 2, on_chunk=None) -> list[np.ndarray | str]:
    """Embed the image files ``paths`` (a vector, or a reason for each unusable file).

    Decoding and preprocessing of the next chunk run in threads while the network runs
    on the current one. ``on_chunk(paths, results)`` is called after each chunk (to store
    it at once, so a killed run keeps what it embedded).
    """
    out: list[np.ndarray | str] = []
    bar = tqdm(total=len(paths), unit="image", desc=f"embedding ({encoder.name})", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    chunks = [paths[i:i + EMBED_CHUNK] for i in range(0, len(paths), EMBED_CHUNK)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = [pool.submit(_prepare, encoder, p) for p in chunks[0]] if chunks else []
        for k in range(len(chunks)):
            prepared = [f.result() for f in pending]
            if k + 1 < len(chunks):
                pending = [pool.submit(_prepare, encoder, p) for p in chunks[k + 1]]
            good = [i for i, x in enumerate(prepared) if not isinstance(x, str)]
            vectors = encoder.embed(np.stack([prepared[i] for i in good])) if good else []
            result: list[np.ndarray | str] = list(prepared)
            for i, v in zip(good, vectors):
                result[i] = v
            if on_chunk is not None:
                on_chunk(chunks[k], result)
            out.extend(result)
            bar.update(len(prepared))
    bar.close()
    return out


@dataclass
class EmbeddedUser:
    """What embedding one user's files gave: the embeddings, the files used, the files skipped."""

    user_id: str
    vectors: np.ndarray  # (k, dim) float32, k may be 0
    used: list[str]
    skipped: list[tuple[str, str]]  # (file, reason)

    @property
    def count(self) -> int:
        """How many usable images the user has."""
        return len(self.vectors)


def lookup_or_embed(paths: list[Path], encoder, store: EmbeddingStore, *,
                    progress: bool = False) -> tuple[list[bytes | str], dict[bytes, np.ndarray | str]]:
    """The content digest of each file in ``paths`` (or the reason it cannot be read), and
    the embedding (or the reason the image is unusable) of each digest.

    Only contents the store does not know are decoded and embedded, each once; they are
    stored chunk by chunk, so a killed run keeps what it embedded.
    """
    identity = encoder.identity
    digests: list[bytes | str] = []
    for path in paths:
        try:
            digests.append(content_digest(path))
        except ImageError as exc:
            digests.append(exc.reason)
    known = store.get(identity, [d for d in digests if isinstance(d, bytes)])
    for value in known.values():  # a cache is a file anyone may have written (or imported: embed's Parquet)
        if isinstance(value, str):
            continue
        if value.shape != (encoder.dim,):
            wrong = f"has {value.size} values where the encoder gives {encoder.dim}"
        elif not np.all(np.abs(value) <= MAX_VALUE):
            wrong = f"has values not finite or over {MAX_VALUE:g} in size"
        else:
            continue
        raise DataError(f"{store.path}: an embedding stored for encoder {identity[:100]} {wrong}: it is not "
                        "that encoder's; remove the cache file, or import embeddings that are")
    missing = {d: path for d, path in zip(digests, paths) if isinstance(d, bytes) and d not in known}
    if missing:
        digest_of = {path: d for d, path in missing.items()}

        def keep(chunk: list[Path], results: list) -> None:
            store.put(identity, {digest_of[p]: r for p, r in zip(chunk, results)})

        computed = compute_embeddings(encoder, list(missing.values()), progress=progress, on_chunk=keep)
        known.update(zip(missing, computed))
    return digests, known


def embed_users(users: list[User], encoder, store: EmbeddingStore, *,
                max_images: int = DEFAULT_MAX_IMAGES, progress: bool = False) -> list[EmbeddedUser]:
    """Each user's embeddings (``EmbeddedUser.vectors``, shape (k, dim)), through ``store``.

    Up to ``max_images`` usable images per user, tried in ``candidate_order``; unusable
    files are listed in ``skipped``. Only images the store does not know are decoded
    and embedded, each distinct content once.
    """
    orders = [candidate_order(len(u.files), max_images) for u in users]
    position = [0] * len(users)
    vectors: list[list[np.ndarray]] = [[] for _ in users]
    used: list[list[str]] = [[] for _ in users]
    skipped: list[list[tuple[str, str]]] = [[] for _ in users]
    while True:
        wanted: list[tuple[int, Path]] = []
        for i, user in enumerate(users):
            need = max_images - len(vectors[i])
            take = orders[i][position[i]:position[i] + need] if need > 0 else []
            position[i] += len(take)
            wanted.extend((i, user.files[j]) for j in take)
        if not wanted:
            break
        digests, known = lookup_or_embed([path for _, path in wanted], encoder, store, progress=progress)
        for digest, (i, path) in zip(digests, wanted):
            value = known[digest] if isinstance(digest, bytes) else digest
            if isinstance(value, str):
                skipped[i].append((str(path), value))
            else:
                vectors[i].append(value)
                used[i].append(path.name)
    return [EmbeddedUser(u.user_id, np.stack(v) if v else np.zeros((0, encoder.dim), np.float32),
                        used[i], skipped[i])
            for i, (u, v) in enumerate(zip(users, vectors))]


class EmbeddedData:
    """A dataset's users as sets of image embeddings, with labels: what the set head trains on.

    Offers what training reads from a prepared cache: ``len``, ``labels(trait)``,
    ``user_images(i)`` (here (k, dim) embeddings), ``root`` and ``has_truth``.
    """

    def __init__(self, root: Path, encoder: str, dim: int, user_ids: list[str], vectors: np.ndarray,
                 counts: np.ndarray, labels: dict[str, np.ndarray] | None, skipped: int = 0,
                 files: list[str] | None = None):
        self.root = root
        self.encoder = encoder
        self.dim = dim
        self.user_ids = user_ids
        self.vectors = vectors
        self.counts = counts.astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self._labels = labels
        self.skipped = skipped
        #: the file name of each row of ``vectors`` (inside its user's folder), where known
        self.files = files
        #: how the embeddings were obtained (the cache's hits and misses), when built here
        self.note = ""
        #: the adapted encoder's top weights, where the encoder was adapted (a model keeps them)
        self.encoder_top: list[np.ndarray] | None = None

    @classmethod
    def build(cls, dataset: Dataset, encoder, store: EmbeddingStore, *,
              max_images: int = DEFAULT_MAX_IMAGES, progress: bool = False) -> "EmbeddedData":
        hits, misses = store.hits, store.misses
        embedded = embed_users(dataset.users, encoder, store, max_images=max_images, progress=progress)
        note = (f"embedding cache {store.path}: {store.hits - hits} hits, "
                f"{store.misses - misses} images embedded")
        empty = [e.user_id for e in embedded if not e.count]
        if empty:
            log.warning("%s: %d user(s) have no usable image and are left out: %s",
                        dataset.root, len(empty), listing(empty))
        keep = [k for k, e in enumerate(embedded) if e.count]
        labels = None
        if dataset.has_truth:
            labels = {t: np.array([LABELS[t].index(dataset.users[k].labels[t]) for k in keep], np.int64)
                      for t in TRAITS}
        vectors = (np.concatenate([embedded[k].vectors for k in keep]) if keep
                   else np.zeros((0, encoder.dim), np.float32))
        data = cls(dataset.root, encoder.identity, encoder.dim, [embedded[k].user_id for k in keep],
                   vectors, np.array([embedded[k].count for k in keep]), labels,
                   skipped=sum(len(e.skipped) for e in embedded),
                   files=[name for k in keep for name in embedded[k].used])
        data.note = note
        return data

    @classmethod
    def for_training(cls, dataset: Dataset, config, store: EmbeddingStore, *, encoder=None,
                     progress: bool = False) -> "EmbeddedData":
        """``build`` as a ``TrainConfig`` asks: its encoder, and enough images per user for ``cap``."""
        from profiler.encoders import get_encoder

        return cls.build(dataset, encoder or get_encoder(config.encoder), store,
                         max_images=max(config.max_images, config.cap), progress=progress)

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def has_truth(self) -> bool:
        return self._labels is not None

    def labels(self, trait: str) -> np.ndarray:
        if self._labels is None:
            raise DataError(f"{self.root}: the dataset had no truth file, so there are no labels")
        return self._labels[trait]

    def user_images(self, i: int) -> np.ndarray:
        return self.vectors[self.offsets[i]:self.offsets[i] + self.counts[i]]

    def mapped(self, stage, fitted: np.ndarray) -> "EmbeddedData":
        """A copy whose rows are ``stage(rows, training=...)``, computed once.

        ``training`` is true for the rows of the users at positions ``fitted`` (those a
        model is fitted on) and false for the rest.
        """
        in_fit = np.zeros(len(self), bool)
        in_fit[np.asarray(fitted, np.int64)] = True
        rows = np.repeat(in_fit, self.counts)
        inside, outside = stage(self.vectors[rows], training=True), stage(self.vectors[~rows], training=False)
        vectors = np.empty((len(self.vectors), inside.shape[1]), np.float32)
        vectors[rows], vectors[~rows] = inside, outside
        out = EmbeddedData(self.root, self.encoder, vectors.shape[1], self.user_ids, vectors, self.counts,
                           self._labels, self.skipped, self.files)
        out.encoder_top = self.encoder_top
        return out

    def image_users(self) -> np.ndarray:
        """The user position of each row of ``vectors``."""
        return np.repeat(np.arange(len(self)), self.counts)

    def summary(self) -> str:
        return (f"{self.root}: {len(self)} users, {len(self.vectors)} image embeddings from "
                f"{self.encoder} ({self.skipped} files skipped)" + (f"; {self.note}" if self.note else ""))


# --- embeddings as Parquet: made on many machines, imported into one cache ----------------

#: the columns of an embeddings Parquet file (``profiler embed``), one row per image file
EMBEDDING_COLUMNS = ("user_id", "file", "digest", "encoder", "vector", "reason")
#: the Arrow schema of those columns, as Spark writes it too
EMBEDDING_SCHEMA = ("user_id string, file string, digest string, encoder string, vector array<float>, "
                    "reason string")


def embedding_rows(users: list[User], encoder, store: EmbeddingStore, *, progress: bool = False):
    """One row per image file of ``users`` (``EMBEDDING_COLUMNS``), embedded through ``store``.

    ``digest`` is the SHA-256 of the file's bytes in hex (None if unreadable), ``vector``
    the embedding, or None with the ``reason`` the file is unusable.
    """
    import pandas as pd

    pairs = [(u.user_id, path) for u in users for path in u.files]
    digests, known = lookup_or_embed([path for _, path in pairs], encoder, store, progress=progress)
    records = []
    for (user_id, path), digest in zip(pairs, digests):
        value = known[digest] if isinstance(digest, bytes) else digest
        usable = not isinstance(value, str)
        records.append((user_id, str(path), digest.hex() if isinstance(digest, bytes) else None,
                        encoder.identity, value.astype(np.float32) if usable else None,
                        None if usable else value))
    return pd.DataFrame.from_records(records, columns=list(EMBEDDING_COLUMNS))


def import_embeddings(path: str | Path, store: EmbeddingStore, *, batch_rows: int = 4096,
                      expect: dict[str, int] | None = None) -> dict[str, int]:
    """Put the embeddings of a Parquet file or folder (``profiler embed``'s output) in ``store``.

    Every row is checked before anything is stored (a first pass): a 64-hex-digit
    digest, an encoder identity, and either a vector of the same length as that encoder's
    others (and as ``expect`` says, where it names the identity: an encoder's length),
    finite and at most ``MAX_VALUE`` in size, or a reason. Rows without a digest
    (unreadable files) are left out.
    The second pass stores the rows batch by batch, so memory stays flat for any size.
    Returns the number of rows stored per encoder identity.
    """
    counts: dict[str, int] = {}
    for encoder, _ in _parquet_entries(path, batch_rows, expect or {}):
        counts[encoder] = counts.get(encoder, 0) + 1
    batch: dict[str, dict] = {}
    for n, (encoder, entry) in enumerate(_parquet_entries(path, batch_rows, expect or {}), 1):
        batch.setdefault(encoder, {}).update([entry])
        if n % batch_rows == 0:
            for name, entries in batch.items():
                store.put(name, entries)
            batch = {}
    for name, entries in batch.items():
        store.put(name, entries)
    return counts


def _parquet_entries(path: str | Path, batch_rows: int, expect: dict[str, int]):
    """Yield ``(encoder, (digest bytes, vector or reason))`` from an embeddings Parquet, checked
    (``import_embeddings``)."""
    try:
        import pyarrow.dataset as ds
    except ImportError as exc:
        raise DataError("reading Parquet needs pyarrow: pip install 'profiler[spark]'") from exc
    import re

    from core.errors import clip

    path = Path(path)
    dims = dict(expect)
    row = 0
    try:
        dataset = ds.dataset(path, format="parquet")
        missing = [c for c in ("digest", "encoder", "vector", "reason") if c not in dataset.schema.names]
        if missing:
            raise DataError(f"{path}: not an embeddings file of 'profiler embed' (no column "
                            f"{', '.join(missing)}; it has {', '.join(dataset.schema.names[:8])})")
        for batch in dataset.to_batches(columns=["digest", "encoder", "vector", "reason"], batch_size=batch_rows):
            columns = batch.to_pydict()
            for digest, encoder, vector, reason in zip(columns["digest"], columns["encoder"], columns["vector"],
                                                        columns["reason"]):
                row += 1
                where = f"{path}: row {row}"
                if digest is None:
                    continue  # the file could not be read: nothing to remember by content
                if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                    raise DataError(f"{where}: digest {clip(digest)} is not a SHA-256 in hex")
                if not isinstance(encoder, str) or not encoder or len(encoder) > 200:
                    raise DataError(f"{where}: no encoder identity (or one over 200 characters)")
                if vector is None:
                    if not isinstance(reason, str) or not reason:
                        raise DataError(f"{where}: neither a vector nor a reason")
                    value: np.ndarray | str = reason[:500]
                else:
                    value = np.asarray(vector, np.float32)
                    if value.ndim != 1 or not len(value) or not np.all(np.abs(value) <= MAX_VALUE):
                        raise DataError(f"{where}: the vector is empty, not finite or over {MAX_VALUE:g} in size")
                    if dims.setdefault(encoder, len(value)) != len(value):
                        whose = "the encoder gives" if encoder in expect else "the other vectors of it have"
                        raise DataError(f"{where}: a vector of {len(value)} values for {clip(encoder, 120)}, but "
                                        f"{whose} {dims[encoder]}")
                yield encoder, (bytes.fromhex(digest), value)
    except DataError:
        raise
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's errors derive from these
        raise DataError(f"{path}: not a readable embeddings Parquet ({type(exc).__name__}: "
                        f"{clip(str(exc), 300)})") from exc
