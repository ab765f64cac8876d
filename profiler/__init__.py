"""profiler: author profiling from the images social-media users post.

Heavy modules (Keras, TensorFlow) are imported only by the functions that need them,
so importing the package, the data stage or the evaluator is quick.
"""
from core import __version__  # noqa: F401  (one version for every layer)


def __getattr__(name: str):
    """``profiler.predict_users`` and ``profiler.load_model``, imported on first use (they pull in Keras)."""
    if name == "predict_users":
        from profiler.prediction import predict_users

        return predict_users
    if name == "load_model":
        from profiler.models.io import load_model

        return load_model
    raise AttributeError(f"module 'profiler' has no attribute {name!r}")
