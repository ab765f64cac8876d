"""Model families, one module each: ``volumes`` (the paper's 3D CNNs) and ``sets`` (the
default set model over image embeddings). ``family_of(name)`` finds the one that serves
a ``TrainConfig.model`` or a saved model's ``variant``; the interface is in ``base``.
"""
from __future__ import annotations

from core.errors import ConfigError
from profiler.families.base import Family, Reader
from profiler.families.sets import SETS
from profiler.families.volumes import VOLUMES

FAMILIES: tuple[Family, ...] = (SETS, VOLUMES)


def family_of(model: str) -> Family:
    """The family serving the model named ``model`` ("set", "model1", "model2")."""
    for family in FAMILIES:
        if model in family.models:
            return family
    known = [m for f in FAMILIES for m in f.models]
    raise ConfigError(f"no model family serves {model!r}; the models are {', '.join(known)}")


__all__ = ["FAMILIES", "SETS", "VOLUMES", "Family", "Reader", "family_of"]
