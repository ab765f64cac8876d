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


#: what a model's config may claim (a model file is input: a crafted one must not make the
#: tool allocate terabytes or write labels no output format can carry)
LIMITS = {"p": (1, 256), "height": (8, 2048), "width": (8, 2048), "cap": (1, 4096), "dim": (1, 65536),
          "units": (1, 65536)}


def check_config(labels: dict, temperatures: dict | None = None, decisions: dict | None = None,
                 ood: dict | None = None, **values) -> None:
    """Raise ``ValueError`` unless a model's labels are this version's and every size is in
    ``LIMITS`` (``values``: name -> a whole number or a list of them; list entries are "units")."""
    from core.labels import check_label_space

    check_label_space(labels)
    for name, value in values.items():
        low, high = LIMITS[name if name in LIMITS else "units"]
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ValueError(f"{name} must be whole numbers from {low} to {high}, not {v!r}")
    for t, v in (temperatures or {}).items():
        if t not in TRAITS or isinstance(v, bool) or not isinstance(v, (int, float)) or not 1e-3 <= v <= 1e3:
            raise ValueError(f"temperatures must be numbers from 0.001 to 1000 per trait, not {t!r}: {v!r}")
    from profiler.decisions import check_record

    check_record(decisions, labels)
    from profiler import ood as ood_score

    ood_score.check_record(ood)


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
