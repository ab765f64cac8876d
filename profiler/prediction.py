"""Profiling users with a trained model: batched, streaming, and free of global state.

``predict_users(paths, model)`` takes a batch of user folders (or dataset folders) and
returns a DataFrame, one row per user; it holds nothing between calls, so it can run
inside a distributed engine's batch function (Spark's ``mapInPandas``, say).
``iter_predictions`` is the streaming form the CLI uses: it decodes the next batch of
users in a background thread while the model works on the current one, and never
holds more than two batches of images, so memory stays flat for any number of users.

The model's family (``profiler.families``) supplies a ``Reader`` that turns a batch of
user folders into model inputs exactly as training did: for the set model, each user's
images embedded through the embedding cache (only images it has not seen are decoded
and run through the encoder), up to ``cap`` of them as a set, with no filling; for the
3D CNNs, a volume of ``p`` decoded images (fewer are repeated cyclically and the row
flags it as "filled"). With ``tta=K`` the probabilities are averaged over K random
choices of the user's images (seeded per user, so results do not depend on the batch).
A user with no usable image gets an error entry and the run goes on.

The model always runs on chunks of exactly ``COMPUTE_BATCH`` volumes (the last padded),
so a user's probabilities are the same whatever batch size the caller chose.
"""
from __future__ import annotations

import contextlib
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.errors import ModelFileError
from core.labels import ABSTAIN, TRAITS
from data_prep.cache import decoding_pool
from data_prep.dataset import User, discover_users
from profiler.batching import padded_chunks
from profiler.families import Reader

COMPUTE_BATCH = 16


@dataclass
class Predictor:
    """A loaded model, what it needs to know about its inputs, and its family's ``Reader``.

    The reader turns user folders into model inputs (decoded volumes for the 3D CNNs,
    embedding sets through the embedding cache for the set model); the predictor runs
    the model on them. It holds no family branch.
    """

    model: object
    info: dict
    reader: Reader
    decider: object = None  # profiler.decisions.Decider: probabilities -> labels
    run: object = None  # the family's runner: chunk -> (outputs, items for the ood score)
    scorer: object = None  # profiler.ood.Scorer, where the model records one

    @classmethod
    def load(cls, model, *, encoder=None, store=None, decide: str | None = None) -> "Predictor":
        """From a ``.keras`` path or an already loaded model.

        A set model gets the encoder it was trained with (``encoder`` to pass one; it
        must have the same identity) and ``store`` (an ``EmbeddingStore``, or a path;
        the default cache otherwise). ``decide`` is the decision rule
        (``profiler.decisions``: argmax, balanced, macro or precision=P; None: the model's default).
        """
        from profiler.decisions import Decider

        from profiler.families import family_of
        from profiler.models.io import load_model, model_info

        name = model if isinstance(model, (str, Path)) else getattr(model, "name", "model")
        if isinstance(model, (str, Path)):
            model = load_model(model)
        info = model_info(model)
        if info["variant"] is None or info["labels"] is None:
            raise ModelFileError(f"{name}: a Keras model, but not one that 'profiler train' made (it has "
                                 "no profiler variant or labels); give the model.keras of a training run")
        family = family_of(info["variant"])
        decider = Decider(decide, info, name=str(name))
        scorer = None
        if info.get("ood"):
            from profiler.ood import Scorer

            scorer = Scorer(info["ood"])
        return cls(model, info, family.reader(info, name=str(name), encoder=encoder, store=store, model=model),
                   decider,
                   family.runner(model), scorer)

    def probabilities(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Calibrated class probabilities per trait for a stack of model inputs (``evaluate``)."""
        return self.evaluate(inputs)[0]

    def evaluate(self, inputs: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Calibrated class probabilities per trait for a stack of model inputs, in fixed-size
        chunks (the model's softmax, shifted to the real class shares where it was trained with
        balanced class weights, with each head's temperature: ``profiler.calibration``),
        and each input's out-of-distribution score (``profiler.ood``; NaN if the model has no record)."""
        from profiler.calibration import calibrate, model_shares

        out, ood = {t: [] for t in TRAITS}, []
        for chunk, n_real in padded_chunks(inputs, COMPUTE_BATCH):
            result, items = self._forward(chunk)
            for t in TRAITS:
                out[t].append(np.asarray(result[t])[:n_real])
            ood.extend(self._ood(rows) for rows in items[:n_real])
        probs = {t: calibrate(np.concatenate(v), self.info["temperatures"][t], model_shares(self.info, t)) if v
                 else np.zeros((0, len(self.info["labels"][t]))) for t, v in out.items()}
        return probs, np.asarray(ood, np.float64)

    def _forward(self, chunk: np.ndarray) -> tuple[dict, list]:
        """The model on one chunk (compiled: faster than an eager call; README, Speed), and each
        input's items for the out-of-distribution score."""
        return self.run(chunk)

    def _ood(self, rows: np.ndarray) -> float:
        if self.scorer is None:
            return float("nan")
        if rows.shape[-1] != len(self.scorer.mean):
            raise ModelFileError(f"the model's out-of-distribution record is for items of width "
                                 f"{len(self.scorer.mean)}, but its inputs give {rows.shape[-1]}")
        return self.scorer.score(rows)


def explain_user(predictor: Predictor, user, decided: dict | None = None) -> dict:
    """Which of a featurized user's images moved each trait's prediction, and by how much.

    The images are taken out one at a time (``Reader.ablations``: left out of the set model's
    set, blacked out of a 3D CNN's volume) from the deterministic input (no ``--tta``). Per
    trait: the class explained (``decided``'s label; the most probable where there is none or
    it abstains), its probability, and every image with its ``effect``: how much that
    probability falls without it (negative: the image speaks against the class), most
    supportive first (ties in the input's order).
    """
    stack, names = predictor.reader.ablations(user)
    probs = predictor.probabilities(stack)
    labels = predictor.info["labels"]
    out = {}
    for t in TRAITS:
        full = probs[t][0]
        label = (decided or {}).get(t)
        c = labels[t].index(label) if label in labels[t] else int(np.argmax(full))
        effects = full[c] - probs[t][1:, c]
        order = np.argsort(-effects, kind="stable")
        out[t] = {"class": labels[t][c], "probability": float(full[c]),
                  "images": [{"file": names[i], "effect": float(effects[i])} for i in order]}
    return out


def _rows(users: list[User], featurized: list, predictor: Predictor, tta: int, seed: int,
          explain: int = 0) -> list[dict]:
    reader = predictor.reader
    labels = predictor.info["labels"]
    ok = [i for i, f in enumerate(featurized) if f.count]
    stacks = [reader.inputs(featurized[i], tta, seed) for i in ok]
    probs, ood = predictor.evaluate(np.concatenate(stacks)) if stacks else ({}, None)
    per_user, unusual = {}, {}
    start = 0
    for i, stack in zip(ok, stacks):
        per_user[i] = {t: probs[t][start:start + len(stack)].mean(axis=0) for t in TRAITS}
        unusual[i] = float(ood[start:start + len(stack)].mean())
        start += len(stack)
    rows = []
    for i, (user, got) in enumerate(zip(users, featurized)):
        row = {"user_id": user.user_id, "path": str(user.files[0].parent) if user.files else "",
               "files": len(user.files), "images_used": min(got.count, reader.max_images),
               "filled": reader.fills and 0 < got.count < reader.max_images, "error": None,
               "decide": predictor.decider.text, "ood": None, "ood_rank": None,
               "skipped": [{"file": f, "reason": r} for f, r in got.skipped]}
        if i in per_user:
            if np.isfinite(unusual[i]):
                rank = predictor.scorer.rank(unusual[i])  # NaN where no validation user was scored
                row["ood"], row["ood_rank"] = unusual[i], rank if np.isfinite(rank) else None
            abstain = predictor.decider.abstains(row["ood"])
            for t in TRAITS:
                vector = per_user[i][t]
                row[t] = ABSTAIN if abstain else predictor.decider.label(t, vector)
                row[f"{t}_probabilities"] = {c: float(v) for c, v in zip(labels[t], vector)}
            if explain:
                evidence = explain_user(predictor, got, {t: row[t] for t in TRAITS})
                row["evidence"] = {t: dict(e, images=e["images"][:explain]) for t, e in evidence.items()}
        else:
            row["error"] = "no image files" if not user.files else "no usable image"
            for t in TRAITS:
                row[t] = None
                row[f"{t}_probabilities"] = None
        rows.append(row)
    return rows


def iter_predictions(users: list[User], predictor: Predictor, *, batch_size: int = 32,
                     tta: int = 0, seed: int = 0, workers: int = 1, progress: bool = False,
                     explain: int = 0):
    """Yield lists of per-user result dicts, one list per batch, in the users' order.

    ``explain`` > 0 adds each profiled user's ``evidence``: per trait the ``explain`` images
    that support the decided class most (``explain_user``; one more model pass per image)."""
    batches = [users[i:i + batch_size] for i in range(0, len(users), batch_size)]
    bar = tqdm(total=len(users), unit="user", desc="profiling", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)

    reader = predictor.reader
    pool = decoding_pool(workers) if reader.processes and workers > 1 and len(users) > batch_size else None

    def decode(batch):
        return reader.featurize(batch, tta, workers=workers, pool=pool)

    with ThreadPoolExecutor(max_workers=1) as background, (pool or contextlib.nullcontext()):
        pending = background.submit(decode, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            decoded = pending.result()
            if k + 1 < len(batches):
                pending = background.submit(decode, batches[k + 1])
            yield _rows(batch, decoded, predictor, tta, seed, explain)
            bar.update(len(batch))
    bar.close()


def predict_users(paths, model, *, batch_size: int = 32, tta: int = 0, seed: int = 0,
                  workers: int = 1, store=None, decide: str | None = None) -> pd.DataFrame:
    """Profile the users in ``paths`` (user folders or dataset folders) with ``model``.

    ``model`` is a ``.keras`` path or a loaded model. Returns one row per user with the
    predicted label and the probability of every class for each trait (columns
    ``gender``, ``gender:female``, ...), how many real images were used, and an error
    message for users that could not be profiled. ``store`` is the set model's embedding
    cache (a path or an ``EmbeddingStore``; the default cache if not given). ``decide``: the
    decision rule (``profiler.decisions``); a user it abstains on gets the label "unknown".
    """
    predictor = Predictor.load(model, store=store, decide=decide)
    users = discover_users(list(paths))
    rows = [row for batch in iter_predictions(users, predictor, batch_size=batch_size, tta=tta,
                                              seed=seed, workers=workers) for row in batch]
    return flatten(rows, predictor.info["labels"])


#: the per-user fields before the traits, in every output format (``ood``: the out-of-distribution
#: score, ``ood_rank``: the share of validation users with a lower one; ``profiler.ood``)
RECORD_FIELDS = ("user_id", "path", "files", "images_used", "filled", "error", "decide", "ood", "ood_rank")


def flatten(rows: list[dict], labels: dict) -> pd.DataFrame:
    """Per-user result dicts as a flat table (one column per class probability)."""
    records = []
    for row in rows:
        flat = {k: row[k] for k in RECORD_FIELDS} | {k: np.nan if row[k] is None else row[k] for k in ("ood", "ood_rank")}
        for t in TRAITS:
            flat[t] = row[t]
            for c in labels[t]:
                probs = row[f"{t}_probabilities"]
                flat[f"{t}:{c}"] = probs[c] if probs else np.nan
        flat["skipped"] = json.dumps(row["skipped"])
        records.append(flat)
    columns = ([*RECORD_FIELDS, *TRAITS]
               + [f"{t}:{c}" for t in TRAITS for c in labels[t]] + ["skipped"])
    return pd.DataFrame(records, columns=columns)


def to_json_record(row: dict) -> dict:
    """A per-user result as nested JSON: each trait with its label and probabilities."""
    out = {k: row[k] for k in RECORD_FIELDS}
    for t in TRAITS:
        out[t] = None if row[t] is None else {"label": row[t], "probabilities": row[f"{t}_probabilities"]}
    out["skipped"] = row["skipped"]
    if "evidence" in row:
        out["evidence"] = row["evidence"]
    return out


OUTPUT_FORMATS = ("json", "jsonl", "csv", "submission")


class PredictionWriter:
    """Writes per-user results to a text stream as the batches come, in one of ``OUTPUT_FORMATS``.

    json: one array of nested records (``to_json_record``); jsonl: one record a line;
    csv: the flat table (``flatten``); submission: ``user_id:::gender:::location:::occupation``
    lines for the users profiled (as ``profiler score`` reads them). ``name`` is the
    output's name in error messages. ``close`` ends the output (the json array).
    """

    def __init__(self, stream, fmt: str, labels: dict, *, name: str = "<stdout>"):
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"format must be one of {OUTPUT_FORMATS}, not {fmt!r}")
        self.stream, self.fmt, self.labels, self.name = stream, fmt, labels, name
        self.first = True
        if fmt == "json":
            stream.write("[")

    def write(self, rows: list[dict]) -> None:
        if self.fmt == "csv":
            self.stream.write(flatten(rows, self.labels).to_csv(index=False, header=self.first))
            self.first = False
            return
        for row in rows:
            if self.fmt == "submission":
                if not row["error"]:
                    from data_prep.truth import label_line

                    self.stream.write(label_line([row["user_id"], *(row[t] for t in TRAITS)], self.name))
                continue
            text = json.dumps(to_json_record(row))
            if self.fmt == "json":
                self.stream.write(("\n  " if self.first else ",\n  ") + text)
            else:
                self.stream.write(text + "\n")
            self.first = False

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n")

