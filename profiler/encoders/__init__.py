"""Frozen pretrained image encoders, behind one interface (``base.Encoder``).

``get_encoder(name)`` gives a ready encoder; ``ENCODERS`` lists them by name, and
``register_encoder`` adds one (a name and a zero-argument factory). The default is
EfficientNet-Lite2 run by LiteRT in int8 (``litert.py``) on the whole image and its
centre crop, averaged (``multicrop.py``): EfficientNet-Lite (chosen over open_nsfw by
``bench/encoders.py``) in int8 is much faster than the Keras float network with the set
model's macro-F within its bootstrap interval (``bench/litert.py``); Lite2 over Lite0
raised the default head's gender F by 0.03-0.04 at the paper's size for about 1.5x the
embedding time, and the centre crop beside the whole image raised every trait's by
0.02-0.04 on both seeds at the paper's size for 2.3x Lite2's embedding time
(``bench/science.py --encoder``; figures in the README).

Encoders of your own: ``register_encoder`` in a module named in the environment variable
``PROFILER_PLUGINS`` (comma-separated module names), which this package imports on its
first use, in every process, so Spark's workers know them too.
"""
from __future__ import annotations

from typing import Callable

from core.errors import ConfigError
from profiler.encoders.base import Encoder


def _efficientnet_lite0() -> Encoder:
    from profiler.encoders.efficientnet_lite import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder()


def _efficientnet_lite2() -> Encoder:
    from profiler.encoders.efficientnet_lite import EfficientNetLite2Encoder

    return EfficientNetLite2Encoder()


def _open_nsfw() -> Encoder:
    from profiler.encoders.open_nsfw import OpenNsfwEncoder

    return OpenNsfwEncoder()


def _litert(base: Callable[[], Encoder], mode: str) -> Callable[[], Encoder]:
    def make() -> Encoder:
        from profiler.encoders.litert import LiteRTEncoder

        return LiteRTEncoder(base(), mode)

    return make


def _crops(base: Callable[[], Encoder], crops: tuple[str, ...] | None = None, suffix: str = "crops") -> Callable[[], Encoder]:
    def make() -> Encoder:
        from profiler.encoders.multicrop import CORNERS_AND_CENTRE, MultiCropEncoder

        return MultiCropEncoder(base(), crops or CORNERS_AND_CENTRE, suffix=suffix)

    return make


ENCODERS: dict[str, Callable[[], Encoder]] = {"efficientnet_lite0": _efficientnet_lite0,
                                              "efficientnet_lite0_int8": _litert(_efficientnet_lite0, "int8"),
                                              "efficientnet_lite0_float32": _litert(_efficientnet_lite0, "float32"),
                                              "efficientnet_lite2": _efficientnet_lite2,
                                              "efficientnet_lite2_int8": _litert(_efficientnet_lite2, "int8"),
                                              "efficientnet_lite2_float32": _litert(_efficientnet_lite2, "float32"),
                                              "efficientnet_lite2_int8_crops": _crops(_litert(_efficientnet_lite2, "int8")),
                                              "efficientnet_lite2_int8_centre": _crops(_litert(_efficientnet_lite2, "int8"),
                                                                                       ("centre",), "centre"),
                                              "open_nsfw": _open_nsfw}
DEFAULT_ENCODER = "efficientnet_lite2_int8_centre"


def register_encoder(name: str, factory: Callable[[], Encoder]) -> None:
    """Make ``get_encoder(name)`` return ``factory()``."""
    ENCODERS[name] = factory


def get_encoder(name: str = DEFAULT_ENCODER) -> Encoder:
    """The encoder called ``name`` (or named by an encoder identity ``name@digest``)."""
    from core.labels import suggest

    base = name.split("@", 1)[0].split(":", 1)[0]
    if base not in ENCODERS:
        close = suggest(base, list(ENCODERS))
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown encoder {name!r}{hint}; expected one of {', '.join(ENCODERS)}")
    return ENCODERS[base]()


def load_plugins() -> None:
    """Import the modules named in ``PROFILER_PLUGINS`` (each registers its encoders)."""
    import importlib
    import os

    for module in filter(None, (m.strip() for m in os.environ.get("PROFILER_PLUGINS", "").split(","))):
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ConfigError(f"PROFILER_PLUGINS: module {module!r} did not import "
                              f"({type(exc).__name__}: {exc})") from exc


load_plugins()

__all__ = ["DEFAULT_ENCODER", "ENCODERS", "Encoder", "get_encoder", "register_encoder"]
