"""The models: a 3D CNN trunk (two variants, after the paper) feeding three softmax heads,
and a head over the set of a user's image embeddings from a frozen encoder (the default).

Model code uses only ``keras.*`` so it runs on the TensorFlow, JAX and PyTorch backends.
The names below load Keras on first use, so ``profiler.models.choices`` stays light.
"""
_NAMES = {"VARIANTS": "choices", "block_list": "cnn3d", "Cnn3dProfiler": "cnn3d",
          "SetProfiler": "set_head", "load_model": "io", "model_info": "io", "save_model": "io"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'profiler.models' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"profiler.models.{_NAMES[name]}"), name)


def register() -> None:
    """Import the model modules, so that Keras knows their serializable classes."""
    from profiler.backend import import_keras

    import_keras()
    import profiler.models.cnn3d  # noqa: F401
    import profiler.models.set_head  # noqa: F401
