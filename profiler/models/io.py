"""Saving and loading models as single ``.keras`` files (safe mode on load)."""
from __future__ import annotations

from pathlib import Path

from core.errors import ModelFileError


def save_model(model, path: str | Path) -> Path:
    """Save ``model`` to ``path`` (a ``.keras`` file) atomically."""
    from core.io import atomic_path

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model files end in .keras, not {path.suffix!r}")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


def load_model(path: str | Path, *, compile: bool = False):
    """Load a ``.keras`` model saved by profiler, in Keras' safe mode.

    ``compile=False`` (the default) also loads files saved under another backend.
    """
    from profiler.backend import import_keras
    from profiler.models import register

    keras = import_keras()  # quietly, with the backend's settings
    register()  # Keras learns the custom classes

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    import zipfile

    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that is there
        raise ModelFileError(f"{path}: not a .keras model file (not a zip archive: truncated, or "
                             "another kind of file)")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ModelFileError(f"{path}: not a loadable profiler model ({type(exc).__name__}: {exc})") from exc


def model_info(model) -> dict:
    """What a saved model needs at prediction time: its variant, input shape, labels, version.

    A 3D CNN's has ``p``, ``height``, ``width`` and ``fit``; a set model's ``cap``,
    ``encoder``, ``dim``, ``pooling`` and ``encoder_top`` (whether the model keeps its adapted
    encoder's top weights) (and ``p``, ``height``, ``width`` None).
    """
    config = model.get_config()
    info = {"variant": config.get("variant"), "p": config.get("p"), "height": config.get("height"),
            "width": config.get("width"), "fit": config.get("image_fit", "pad"), "labels": config.get("labels"),
            "temperatures": {t: 1.0 for t in config.get("labels") or {}} | (config.get("temperatures") or {}),
            "profiler_version": config.get("profiler_version"), "decisions": config.get("decisions"), "ood": config.get("ood")}
    if info["variant"] == "set":
        info.update(cap=config["cap"], encoder=config["encoder"], dim=config["dim"],
                    pooling=config["pooling"], encoder_top=bool(config.get("encoder_top")))
    return info
