"""The classification stage and the three named softmax heads, for any trunk."""
from __future__ import annotations

from profiler.backend import import_keras

keras = import_keras()  # before Keras: the backend's settings and quiet start-up

from core.labels import TRAITS


def classification_stage(x, dense: tuple[int, ...], dropout: float, *, name: str = "fc"):
    """Fully connected ReLU layers, each followed by dropout (the paper's Fig. 6)."""
    for i, units in enumerate(dense):
        x = keras.layers.Dense(units, activation="relu", name=f"{name}{i + 1}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}{i + 1}_dropout")(x)
    return x


def temperatures_of(temperatures: dict | None) -> dict[str, float]:
    """Each head's calibration temperature (``profiler.calibration``); 1 where none is fitted."""
    return {t: float((temperatures or {}).get(t, 1.0)) for t in TRAITS}


def trait_heads(x, labels: dict[str, list[str]]) -> dict:
    """One softmax head per trait, named after it, sized by its vocabulary (2, 6, 8).

    The softmax is computed in float32 even under a mixed-precision policy.
    """
    return {trait: keras.layers.Dense(len(labels[trait]), activation="softmax", name=trait,
                                      dtype="float32")(x)
            for trait in TRAITS}
