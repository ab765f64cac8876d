"""The package's errors: each names the file (and line) it is about.

``ProfilerError`` is the root; the command line turns any of them into a one-line
message and exit code 1. Its kinds say whose fault it is and what to fix:
``DataError`` (an input file or folder), ``ConfigError`` (a setting),
``RunStateError`` (a run directory: finished, already there, not resumable) and
``ModelFileError`` (a model file that cannot be loaded or does not fit its inputs).
"""
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


class ProfilerError(Exception):
    """Anything profiler refuses to do, with a message a user can act on.

    ``problems`` holds every problem found, so a user can fix them all at once.
    """

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class DataError(ProfilerError):
    """Bad input data; the message names the file and, where there is one, the line."""

    @classmethod
    def from_problems(cls, problems: list[Problem], *, limit: int = 20) -> "DataError":
        """Build one error whose message lists the problems (at most ``limit`` of them)."""
        errors = [p for p in problems if p.severity == "error"]
        shown = errors[:limit]
        lines = [str(p) for p in shown]
        if len(errors) > limit:
            lines.append(f"... and {len(errors) - limit} more problems")
        return cls("\n".join(lines), problems)


class ConfigError(ProfilerError):
    """A bad setting: an unknown key, a value out of range, a settings file that does not parse."""


class RunStateError(ProfilerError):
    """A run directory in a state that forbids the request (finished, occupied, not resumable)."""


class ModelFileError(ProfilerError):
    """A model file that cannot be loaded safely, or that does not fit the inputs given."""


def clip(value, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters (a 5 MB label is not echoed)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(value) if isinstance(value, str) else len(text):,} characters)"


def listing(items: list[str], limit: int = 10) -> str:
    """``items`` joined by commas, the first ``limit`` only, then how many there are in all."""
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


class ImageError(Exception):
    """An image file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
