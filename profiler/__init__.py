"""profiler: author profiling from the images social-media users post.

Heavy modules (Keras, TensorFlow) are imported only by the functions that need them,
so importing the package, the data stage or the evaluator is quick.
"""
__version__ = "0.1.0"
