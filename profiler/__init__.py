"""profiler: author profiling from the images social-media users post.

Heavy modules (Keras, TensorFlow) are imported only by the functions that need them,
so importing the package, the data stage or the evaluator is quick.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    """``profiler.predict_users``, imported on first use (it pulls in Keras)."""
    if name == "predict_users":
        from profiler.prediction import predict_users

        return predict_users
    raise AttributeError(f"module 'profiler' has no attribute {name!r}")
