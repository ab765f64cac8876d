"""Profiling users with a trained model: batched, streaming, and free of global state.

``predict_users(paths, model)`` takes a batch of user folders (or dataset folders) and
returns a DataFrame, one row per user; it holds nothing between calls, so it can run
inside a distributed engine's batch function (Spark's ``mapInPandas``, say).
``iter_predictions`` is the streaming form the CLI uses: it decodes the next batch of
users in a background thread while the model works on the current one, and never
holds more than two batches of images, so memory stays flat for any number of users.

For the set model, each user's images are embedded through the embedding cache (only
images it has not seen are decoded and run through the encoder) and up to ``cap`` of
them form the user's set, with no filling. For the 3D CNNs, a user's volume is built
as in training: fewer than ``p`` images are repeated cyclically (the row says how many
were real and flags it), more than ``p`` give an even spread. With ``tta=K`` the
probabilities are averaged over K random choices and orders of the user's images
(seeded per user, so results do not depend on the batch). A user with no usable image
gets an error entry and the run goes on.

The model always runs on chunks of exactly ``COMPUTE_BATCH`` volumes (the last padded),
so a user's probabilities are the same whatever batch size the caller chose.
"""
from __future__ import annotations

import contextlib
import json
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_prep.cache import DecodedUser, PrepareConfig, decode_users, decoding_pool
from data_prep.dataset import User, discover_users
from core.errors import ModelFileError
from core.labels import TRAITS
from data_prep.volumes import select_indices
from profiler.batching import padded_chunks

COMPUTE_BATCH = 16
TTA_MAX_IMAGES = 32


@dataclass
class Predictor:
    """A loaded model and what it needs to know about its inputs.

    For the set model, also its image encoder and the embedding cache it reads through.
    """

    model: object
    info: dict
    encoder: object = None
    store: object = None

    @classmethod
    def load(cls, model, *, encoder=None, store=None) -> "Predictor":
        """From a ``.keras`` path or an already loaded model.

        A set model gets the encoder it was trained with (``encoder`` to pass one; it
        must have the same identity) and ``store`` (an ``EmbeddingStore``, or a path;
        the default cache otherwise).
        """
        from profiler.models.io import load_model, model_info

        name = model if isinstance(model, (str, Path)) else getattr(model, "name", "model")
        if isinstance(model, (str, Path)):
            model = load_model(model)
        info = model_info(model)
        if info["variant"] != "set":
            return cls(model, info)
        from profiler.embeddings import EmbeddingStore
        from profiler.encoders import get_encoder

        needed = info["encoder"]
        encoder = encoder or get_encoder(needed)
        if encoder.identity != needed:
            raise ModelFileError(f"{name}: this model was trained on embeddings from encoder {needed}, "
                            f"but the encoder given is {encoder.identity}; embeddings from another "
                            "encoder (or other weights) mean nothing to it")
        if not isinstance(store, EmbeddingStore):
            store = EmbeddingStore(store)
        return cls(model, info, encoder, store)

    @property
    def is_set(self) -> bool:
        return self.info["variant"] == "set"

    @property
    def p(self) -> int:
        return int(self.info["p"])

    def decode_config(self, tta: int) -> PrepareConfig:
        return PrepareConfig(height=int(self.info["height"]), width=int(self.info["width"]),
                             fit=self.info.get("fit") or "pad",
                             max_images=self.p if tta <= 1 else max(self.p, TTA_MAX_IMAGES))

    def probabilities(self, volumes: np.ndarray) -> dict[str, np.ndarray]:
        """Class probabilities per trait for a stack of volumes, in fixed-size chunks."""
        out = {t: [] for t in TRAITS}
        for chunk, n_real in padded_chunks(volumes, COMPUTE_BATCH):
            result = self._forward(chunk)
            for t in TRAITS:
                out[t].append(np.asarray(result[t])[:n_real])
        return {t: np.concatenate(v) if v else np.zeros((0, len(self.info["labels"][t])))
                for t, v in out.items()}

    def _forward(self, chunk: np.ndarray) -> dict:
        return self.model.predict_on_batch(chunk)  # compiled: 1.1-5.5x an eager call

    def featurize(self, users: list[User], tta: int, workers: int = 1, pool=None) -> list[DecodedUser]:
        """The users' images decoded for a 3D CNN, or embedded (through the cache) for the set model."""
        if self.is_set:
            from profiler.embeddings import embed_users

            cap = self.p if tta <= 1 else max(self.p, TTA_MAX_IMAGES)
            return embed_users(users, self.encoder, self.store, max_images=cap)
        return list(decode_users(users, self.decode_config(tta), workers=workers, pool=pool))


def _user_volumes(decoded: DecodedUser, p: int, tta: int, seed: int, is_set: bool = False) -> np.ndarray:
    """A user's model inputs: one (or ``tta``) volumes, or packed embedding sets."""
    n = len(decoded.images)
    if is_set:
        from profiler.models.set_head import pack_set

        if tta <= 1 or n <= p:  # the set model is order-invariant: only subsets can differ
            return pack_set(decoded.images, p)[None]
        rng = np.random.default_rng([seed, zlib.crc32(decoded.user_id.encode())])
        return np.stack([pack_set(decoded.images, p, np.sort(rng.choice(n, p, replace=False)))
                         for _ in range(tta)])
    if tta <= 1:
        return decoded.images[select_indices(n, p)][None]
    rng = np.random.default_rng([seed, zlib.crc32(decoded.user_id.encode())])
    return np.stack([decoded.images[select_indices(n, p, rng=rng)] for _ in range(tta)])


def _rows(users: list[User], decoded: list[DecodedUser], predictor: Predictor, tta: int,
          seed: int) -> list[dict]:
    p = predictor.p
    labels = predictor.info["labels"]
    ok = [i for i, d in enumerate(decoded) if len(d.images)]
    stacks = [_user_volumes(decoded[i], p, tta, seed, predictor.is_set) for i in ok]
    probs = predictor.probabilities(np.concatenate(stacks)) if stacks else {}
    per_user = {}
    start = 0
    for i, stack in zip(ok, stacks):
        per_user[i] = {t: probs[t][start:start + len(stack)].mean(axis=0) for t in TRAITS}
        start += len(stack)
    rows = []
    for i, (user, dec) in enumerate(zip(users, decoded)):
        n_real = min(len(dec.images), p)
        row = {"user_id": user.user_id, "path": str(user.files[0].parent) if user.files else "",
               "files": len(user.files), "images_used": n_real,
               "filled": bool(0 < len(dec.images) < p) and not predictor.is_set, "error": None,
               "skipped": [{"file": f, "reason": r} for f, r in dec.skipped]}
        if i in per_user:
            for t in TRAITS:
                vector = per_user[i][t]
                row[t] = labels[t][int(vector.argmax())]
                row[f"{t}_probabilities"] = {c: float(v) for c, v in zip(labels[t], vector)}
        else:
            row["error"] = "no image files" if not user.files else "no usable image"
            for t in TRAITS:
                row[t] = None
                row[f"{t}_probabilities"] = None
        rows.append(row)
    return rows


def iter_predictions(users: list[User], predictor: Predictor, *, batch_size: int = 32,
                     tta: int = 0, seed: int = 0, workers: int = 1, progress: bool = False):
    """Yield lists of per-user result dicts, one list per batch, in the users' order."""
    batches = [users[i:i + batch_size] for i in range(0, len(users), batch_size)]
    bar = tqdm(total=len(users), unit="user", desc="profiling", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)

    pool = (decoding_pool(workers) if workers > 1 and len(users) > batch_size and not predictor.is_set
            else None)

    def decode(batch):
        return predictor.featurize(batch, tta, workers=workers, pool=pool)

    with ThreadPoolExecutor(max_workers=1) as background, (pool or contextlib.nullcontext()):
        pending = background.submit(decode, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            decoded = pending.result()
            if k + 1 < len(batches):
                pending = background.submit(decode, batches[k + 1])
            yield _rows(batch, decoded, predictor, tta, seed)
            bar.update(len(batch))
    bar.close()


def predict_users(paths, model, *, batch_size: int = 32, tta: int = 0, seed: int = 0,
                  workers: int = 1, store=None) -> pd.DataFrame:
    """Profile the users in ``paths`` (user folders or dataset folders) with ``model``.

    ``model`` is a ``.keras`` path or a loaded model. Returns one row per user with the
    predicted label and the probability of every class for each trait (columns
    ``gender``, ``gender:female``, ...), how many real images were used, and an error
    message for users that could not be profiled. ``store`` is the set model's embedding
    cache (a path or an ``EmbeddingStore``; the default cache if not given).
    """
    predictor = Predictor.load(model, store=store)
    users = discover_users(list(paths))
    rows = [row for batch in iter_predictions(users, predictor, batch_size=batch_size, tta=tta,
                                              seed=seed, workers=workers) for row in batch]
    return flatten(rows, predictor.info["labels"])


def flatten(rows: list[dict], labels: dict) -> pd.DataFrame:
    """Per-user result dicts as a flat table (one column per class probability)."""
    records = []
    for row in rows:
        flat = {k: row[k] for k in ("user_id", "path", "files", "images_used", "filled", "error")}
        for t in TRAITS:
            flat[t] = row[t]
            for c in labels[t]:
                probs = row[f"{t}_probabilities"]
                flat[f"{t}:{c}"] = probs[c] if probs else np.nan
        flat["skipped"] = json.dumps(row["skipped"])
        records.append(flat)
    columns = (["user_id", "path", "files", "images_used", "filled", "error", *TRAITS]
               + [f"{t}:{c}" for t in TRAITS for c in labels[t]] + ["skipped"])
    return pd.DataFrame(records, columns=columns)


def to_json_record(row: dict) -> dict:
    """A per-user result as nested JSON: each trait with its label and probabilities."""
    out = {k: row[k] for k in ("user_id", "path", "files", "images_used", "filled", "error")}
    for t in TRAITS:
        out[t] = None if row[t] is None else {"label": row[t], "probabilities": row[f"{t}_probabilities"]}
    out["skipped"] = row["skipped"]
    return out
