"""The label vocabularies of the three traits, in one place.

The canonical names and their order are those of the paper's tables (SPEC section 1).
Spanish spellings from the MEX-A3T shared task are accepted as aliases, case-insensitively.
The order of each tuple is the order of the model's softmax units and of every table.
"""
from __future__ import annotations

import difflib
import functools
import unicodedata

from core.errors import clip

TRAITS: tuple[str, ...] = ("gender", "location", "occupation")

LABELS: dict[str, tuple[str, ...]] = {
    "gender": ("female", "male"),
    "location": ("center", "southeast", "northwest", "north", "northeast", "west"),
    "occupation": (
        "others",
        "arts",
        "student",
        "social",
        "sciences",
        "sports",
        "administrative",
        "health",
    ),
}

ALIASES: dict[str, dict[str, str]] = {
    "gender": {"mujer": "female", "hombre": "male", "woman": "female", "man": "male"},
    "location": {
        "centro": "center",
        "centre": "center",
        "sureste": "southeast",
        "noroeste": "northwest",
        "norte": "north",
        "noreste": "northeast",
        "occidente": "west",
        "oeste": "west",
    },
    "occupation": {
        "otros": "others",
        "other": "others",
        "arte": "arts",
        "artes": "arts",
        "estudiante": "student",
        "ciencias": "sciences",
        "deportes": "sports",
        "administrativo": "administrative",
        "admin": "administrative",
        "salud": "health",
    },
}


class UnknownLabel(ValueError):
    """A label that is neither a canonical name nor an alias of the trait."""

    def __init__(self, trait: str, value: str):
        self.trait = trait
        self.value = value
        self.suggestions = suggest(value, known_spellings(trait)) if len(value) <= 100 else []
        hint = f" (did you mean {self.suggestions[0]!r}?)" if self.suggestions else ""
        allowed = ", ".join(LABELS[trait])
        super().__init__(f"unknown {trait} label {clip(value)}{hint}; expected one of: {allowed}")


def known_spellings(trait: str) -> list[str]:
    """Every spelling accepted for ``trait``: canonical names first, then aliases."""
    return list(LABELS[trait]) + sorted(ALIASES[trait])


def suggest(value: str, choices: list[str], *, n: int = 1) -> list[str]:
    """Close matches for a mistyped ``value`` among ``choices`` (difflib's ratio)."""
    return difflib.get_close_matches(_fold(value), choices, n=n, cutoff=0.6)


def _fold(value: str) -> str:
    """Lower-case, strip whitespace and accents ("Centro " -> "centro", "Salúd" -> "salud")."""
    text = unicodedata.normalize("NFKD", value.strip().lower())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


#: the label of an abstention (``predict --decide precision=P``); submissions may carry it,
#: truth files may not, and scoring counts it as a wrong answer and apart
ABSTAIN = "unknown"


@functools.lru_cache(maxsize=4096)
def normalize_label(trait: str, value: str) -> str:
    """The canonical name of ``value`` for ``trait``; raises ``UnknownLabel`` if unknown.

    Memoised: a file of a million users has only a handful of distinct spellings.
    """
    if trait not in LABELS:
        raise KeyError(f"unknown trait {trait!r}; expected one of {TRAITS}")
    key = _fold(value)
    if key in LABELS[trait]:
        return key
    if key in ALIASES[trait]:
        return ALIASES[trait][key]
    raise UnknownLabel(trait, value)


def label_space() -> dict[str, list[str]]:
    """A JSON-ready copy of the vocabularies, to store beside models and caches."""
    return {trait: list(LABELS[trait]) for trait in TRAITS}


def check_label_space(space: dict[str, list[str]]) -> None:
    """Raise ``ValueError`` if a stored label space differs from this version's."""
    if {t: list(v) for t, v in space.items()} != label_space():
        raise ValueError(
            f"label vocabularies differ from this version of profiler: {str(space)[:300]} != {label_space()}"
        )
