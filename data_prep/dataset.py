"""Finding users and their image files in the dataset layout of SPEC section 3.

```
DATASET/
  truth.txt                 # optional: user_id:::gender:::location:::occupation
  images/<user_id>/*        # or photo/<user_id>/* (PAN 2018)
```

A user's image files are every regular, non-hidden file in its folder (the loader
decides by content which are images), sorted by file name: that sorted order is the
one stable order this package uses; it carries no meaning.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.errors import DataError, listing
from core.labels import TRAITS
from data_prep.truth import read_truth

log = logging.getLogger("profiler")

IMAGE_DIRS = ("images", "photo")
TRUTH_FILES = ("truth.txt", "truth.csv", "truth.jsonl")
MISSING_POLICIES = ("error", "warn")


@dataclass(frozen=True)
class User:
    """One user: an id, its image files in stable order, and labels if known."""

    user_id: str
    files: tuple[Path, ...]
    labels: dict[str, str] | None = None


@dataclass
class Dataset:
    """The users of one dataset folder (a split)."""

    root: Path
    image_dir: Path | None
    truth_path: Path | None
    users: list[User]
    #: users in the truth file that have no image folder (left out of ``users``)
    missing: list[str] = field(default_factory=list)
    #: image folders with no line in the truth file (left out of ``users``)
    unlabelled: list[str] = field(default_factory=list)

    @property
    def has_truth(self) -> bool:
        return self.truth_path is not None

    def labels_frame(self) -> pd.DataFrame:
        """The users' labels as a DataFrame indexed by user id (empty without truth)."""
        rows = [{"user_id": u.user_id, **(u.labels or {})} for u in self.users if u.labels]
        return pd.DataFrame(rows, columns=["user_id", *TRAITS]).set_index("user_id")


def is_text(name: str) -> bool:
    """Whether a name read from the file system is valid UTF-8 (Python keeps other bytes as
    surrogate escapes, which no UTF-8 output can carry)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def shown(path: str | Path) -> str:
    """``path`` as printable text: bytes that are not UTF-8 written as ``\\xNN``."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _named(entries, what: str) -> list[Path]:
    """``entries`` whose names are valid UTF-8; the others are left out with a warning."""
    kept = []
    for p in entries:
        if is_text(p.name):
            kept.append(p)
        else:
            log.warning("%s: the %s name is not valid UTF-8, so no output could name it; left out "
                        "(rename it)", shown(p), what)
    return kept


def list_image_files(folder: Path) -> tuple[Path, ...]:
    """Regular, non-hidden files directly in ``folder`` with UTF-8 names, sorted by name."""
    files = (p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return tuple(sorted(_named(files, "file"), key=lambda p: p.name))


def user_folders(image_dir: Path) -> dict[str, Path]:
    """The user folders in ``image_dir`` by user id (non-hidden, UTF-8 names)."""
    folders = (p for p in image_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {p.name: p for p in _named(folders, "user folder")}


def find_image_dir(root: Path) -> Path | None:
    """``root/images`` or ``root/photo``, whichever exists."""
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    return None


def find_truth(root: Path) -> Path | None:
    """The truth file of a dataset folder, if it has one."""
    for name in TRUTH_FILES:
        if (root / name).is_file():
            return root / name
    return None


def is_dataset_dir(path: Path) -> bool:
    """Whether ``path`` looks like a dataset folder (has ``images/`` or ``photo/``)."""
    return path.is_dir() and find_image_dir(path) is not None


def load_dataset(
    root: str | Path,
    *,
    truth: str | Path | None = None,
    missing: str = "error",
) -> Dataset:
    """Read a dataset folder: its users, their files, and their labels if there is truth.

    ``missing`` says what a truth user with no image folder is: ``"error"`` raises a
    ``DataError`` listing all of them, ``"warn"`` logs them and leaves them out.
    """
    root = Path(root)
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, not {missing!r}")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    image_dir = find_image_dir(root)
    if image_dir is None:
        raise DataError(
            f"{root}: not a dataset folder: expected an 'images/' (or 'photo/') folder "
            "with one sub-folder of images per user"
        )
    truth_path = Path(truth) if truth is not None else find_truth(root)
    folders = user_folders(image_dir)
    if truth_path is None:
        users = [User(uid, list_image_files(folders[uid])) for uid in sorted(folders)]
        return Dataset(root, image_dir, None, users)

    table = read_truth(truth_path)
    absent = [uid for uid in table.index if uid not in folders]
    if absent and missing == "error":
        raise DataError(
            f"{truth_path}: {len(absent)} user(s) have no image folder in {image_dir}: {listing(absent)} "
            "(use --allow-missing to leave them out)"
        )
    if absent:
        log.warning("%s: %d user(s) have no image folder and are left out: %s",
                    truth_path, len(absent), ", ".join(absent[:10]))
    unlabelled = sorted(set(folders) - set(table.index))
    if unlabelled:
        log.warning("%s: %d image folder(s) have no line in %s and are left out: %s",
                    image_dir, len(unlabelled), truth_path.name, ", ".join(unlabelled[:10]))
    users = [
        User(uid, list_image_files(folders[uid]), dict(table.loc[uid]))
        for uid in table.index
        if uid in folders
    ]
    return Dataset(root, image_dir, truth_path, users, absent, unlabelled)


def discover_users(paths: list[str | Path]) -> list[User]:
    """Users from any mix of dataset folders and single-user image folders.

    A dataset folder gives all its users (labels ignored); any other folder is one
    user named after the folder.
    """
    users: list[User] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise DataError(f"{path}: not a folder")
        if is_dataset_dir(path):
            folders = user_folders(find_image_dir(path))
            users.extend(User(uid, list_image_files(folders[uid])) for uid in sorted(folders))
        else:
            uid = path.resolve().name
            if not is_text(uid):
                raise DataError(f"{shown(path)}: the folder name is not valid UTF-8, so no output could "
                                "name this user; rename it")
            users.append(User(uid, list_image_files(path)))
    seen: set[str] = set()
    for user in users:
        if user.user_id in seen:
            raise DataError(f"user id {user.user_id!r} appears twice among {', '.join(map(str, paths))}")
        seen.add(user.user_id)
    return users
