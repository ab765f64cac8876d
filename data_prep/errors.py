"""Error types for bad input: each names the file (and line) it is about."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file: where it is and what it is."""

    path: str
    line: int | None
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.severity}: {self.message}"


class DataError(Exception):
    """Bad input data; the message names the file and, where there is one, the line.

    ``problems`` holds every problem found, so a user can fix them all at once.
    """

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])

    @classmethod
    def from_problems(cls, problems: list[Problem], *, limit: int = 20) -> "DataError":
        """Build one error whose message lists the problems (at most ``limit`` of them)."""
        errors = [p for p in problems if p.severity == "error"]
        shown = errors[:limit]
        lines = [str(p) for p in shown]
        if len(errors) > limit:
            lines.append(f"... and {len(errors) - limit} more problems")
        return cls("\n".join(lines), problems)


def listing(items: list[str], limit: int = 10) -> str:
    """``items`` joined by commas, the first ``limit`` only, then how many there are in all."""
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


class ImageError(Exception):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
