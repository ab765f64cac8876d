"""Reading label files: truth files and submissions share one reader.

Three formats, detected from the content (or given):

- ``txt``: PAN style, one user a line, ``user_id:::gender:::location:::occupation``;
- ``csv``: a header with at least ``user_id,gender,location,occupation`` (extra columns,
  such as probabilities, are ignored);
- ``jsonl``: one JSON object a line with those keys.

A BOM, CRLF line ends, blank lines and whitespace around fields are tolerated. Labels
are normalised to their canonical English names (Spanish aliases, any case). Every
problem is collected with its file and line, so all can be reported at once.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.errors import DataError, Problem, clip
from core.labels import ABSTAIN, TRAITS, UnknownLabel, normalize_label

FORMATS = ("txt", "csv", "jsonl")
COLUMNS = ("user_id",) + TRAITS
SEPARATOR = ":::"


@dataclass
class LabelFile:
    """The parsed rows of a label file and everything found wrong with it.

    ``table`` has one row per valid user: ``user_id``, the three traits (canonical
    names) and ``line`` (1-based line number in the file). Rows with a problem are left
    out of it; duplicates keep their first occurrence.
    """

    path: Path
    format: str
    table: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def raise_for_errors(self) -> None:
        """Raise a ``DataError`` listing every error, if there are any."""
        if self.errors:
            raise DataError.from_problems(self.problems)


#: the largest label file read (a million users' submission is about 60 MB)
MAX_LABEL_FILE_BYTES = 1 << 30


def read_text(path: Path) -> str:
    """The file's text, decoded as UTF-8 with or without a BOM; errors name the file.

    Only regular files of at most ``MAX_LABEL_FILE_BYTES`` are read (not a device or a
    pipe that never ends).
    """
    try:
        if not path.is_file():
            raise DataError(f"{path}: not a regular file")
        size = path.stat().st_size
        if size > MAX_LABEL_FILE_BYTES:
            raise DataError(f"{path}: {size:,} bytes; a label file may have at most "
                            f"{MAX_LABEL_FILE_BYTES:,}")
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from exc


def detect_format(lines: list[str]) -> str | None:
    """Guess the format from the first non-blank line, or ``None`` if it fits none."""
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            return "jsonl"
        if SEPARATOR in text:
            return "txt"
        if "user_id" in [c.strip().lower() for c in text.split(",")]:
            return "csv"
        return None
    return None


def read_label_file(path: str | Path, *, fmt: str = "auto", abstain: bool = False) -> LabelFile:
    """Parse a truth or submission file; problems are collected, not raised.

    ``abstain``: a submission, which may say ``unknown`` (``core.labels.ABSTAIN``) for a trait.

    Raises ``DataError`` only when the file cannot be read at all or its format
    cannot be recognised.
    """
    path = Path(path)
    text = read_text(path)
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        empty = pd.DataFrame(columns=list(COLUMNS) + ["line"])
        return LabelFile(path, fmt, empty, [Problem(str(path), None, "file is empty")])
    if fmt == "auto":
        detected = detect_format(lines)
        if detected is None:
            first = next(i for i, line in enumerate(lines, 1) if line.strip())
            raise DataError(
                f"{path}:{first}: cannot tell the format: expected "
                f"'user_id:::gender:::location:::occupation', a CSV header with "
                f"{','.join(COLUMNS)}, or JSON lines"
            )
        fmt = detected
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}; expected one of {FORMATS}")
    parser = {"txt": _parse_txt, "csv": _parse_csv, "jsonl": _parse_jsonl}[fmt]
    problems: list[Problem] = []
    raw_rows = parser(path, lines, problems)
    return LabelFile(path, fmt, _validate_rows(path, raw_rows, problems, abstain), problems)


def _parse_txt(path: Path, lines: list[str], problems: list[Problem]):
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(SEPARATOR)]
        if len(fields) != len(COLUMNS):
            problems.append(
                Problem(
                    str(path),
                    number,
                    f"malformed line: expected {len(COLUMNS)} fields separated by "
                    f"'{SEPARATOR}' (user_id:::gender:::location:::occupation), "
                    f"found {len(fields)}",
                )
            )
            continue
        yield number, dict(zip(COLUMNS, fields))


def _parse_csv(path: Path, lines: list[str], problems: list[Problem]):
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header: list[str] | None = None
    for number, row in enumerate(reader, 1):
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                problems.append(
                    Problem(str(path), number, f"CSV header lacks column(s): {', '.join(missing)}")
                )
                return
            continue
        if len(row) != len(header):
            problems.append(
                Problem(
                    str(path),
                    number,
                    f"malformed line: expected {len(header)} comma-separated fields, found {len(row)}",
                )
            )
            continue
        record = dict(zip(header, (cell.strip() for cell in row)))
        yield number, {c: record[c] for c in COLUMNS}


def _parse_jsonl(path: Path, lines: list[str], problems: list[Problem]):
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(str(path), number, f"malformed JSON: {exc.msg}"))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(str(path), number, "malformed line: expected a JSON object"))
            continue
        missing = [c for c in COLUMNS if c not in record]
        if missing:
            problems.append(Problem(str(path), number, f"missing key(s): {', '.join(missing)}"))
            continue
        yield number, {c: str(record[c]).strip() for c in COLUMNS}


def _validate_rows(path: Path, rows, problems: list[Problem], abstain: bool = False) -> pd.DataFrame:
    """Normalise labels, reject empty ids and duplicates; return the good rows."""
    good: list[dict] = []
    first_line: dict[str, int] = {}
    for number, record in rows:
        user_id = record["user_id"]
        if not user_id:
            problems.append(Problem(str(path), number, "empty user_id"))
            continue
        ok = True
        for trait in TRAITS:
            if abstain and isinstance(record[trait], str) and record[trait].strip().lower() == ABSTAIN:
                record[trait] = ABSTAIN
                continue
            try:
                record[trait] = normalize_label(trait, record[trait])
            except UnknownLabel as exc:
                problems.append(Problem(str(path), number, str(exc)))
                ok = False
        if user_id in first_line:
            problems.append(
                Problem(
                    str(path),
                    number,
                    f"duplicate user {clip(user_id)} (first seen on line {first_line[user_id]})",
                )
            )
            continue
        first_line[user_id] = number
        if ok:
            good.append({**record, "line": number})
    return pd.DataFrame(good, columns=list(COLUMNS) + ["line"])


def read_truth(path: str | Path, *, fmt: str = "auto") -> pd.DataFrame:
    """Read a truth file strictly: any problem raises ``DataError`` listing them all.

    Returns a DataFrame indexed by ``user_id`` with the three trait columns.
    """
    parsed = read_label_file(path, fmt=fmt)
    if not parsed.problems and parsed.table.empty:
        raise DataError(f"{path}: file is empty")
    if parsed.problems:
        raise DataError.from_problems(
            [Problem(p.path, p.line, p.message, "error") for p in parsed.problems]
        )
    return parsed.table.set_index("user_id")[list(TRAITS)]


def label_line(values, path: str | Path) -> str:
    """One line of a txt label file (``user_id:::gender:::location:::occupation``).

    A value holding the separator or a line break cannot be written so that it reads
    back: that is a ``DataError`` naming ``path`` (the file being written) and the value.
    """
    values = [str(v) for v in values]
    for value in values:
        if SEPARATOR in value or "\n" in value or "\r" in value:
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise DataError(f"{path}: {clip(shown)} cannot be written in the txt format (it holds "
                            f"{SEPARATOR!r} or a line break); nothing was written; use csv or jsonl")
    return SEPARATOR.join(values) + "\n"


def write_label_file(table: pd.DataFrame, path: str | Path, *, fmt: str = "txt") -> None:
    """Write ``user_id`` and the three traits in one of the readable formats, atomically."""
    from core.io import atomic_write_text

    frame = table.reset_index() if "user_id" not in table.columns else table
    frame = frame[list(COLUMNS)]
    if fmt == "txt":
        text = "".join(label_line(row, path) for row in frame.itertuples(index=False))
    elif fmt == "csv":
        text = frame.to_csv(index=False)
    elif fmt == "jsonl":
        text = frame.to_json(orient="records", lines=True)
        if text and not text.endswith("\n"):
            text += "\n"
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    atomic_write_text(path, text)
