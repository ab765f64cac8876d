"""The models: a 3D CNN trunk (two variants, after the paper) feeding three softmax heads,
and a head over the set of a user's image embeddings from a frozen encoder (the default).

Model code uses only ``keras.*`` so it runs on the TensorFlow, JAX and PyTorch backends.
"""
from profiler.backend import import_keras

import_keras()

from profiler.models.cnn3d import VARIANTS, Cnn3dProfiler, block_list  # noqa: E402
from profiler.models.io import load_model, model_info, save_model  # noqa: E402
from profiler.models.set_head import SetProfiler  # noqa: E402

__all__ = ["VARIANTS", "Cnn3dProfiler", "SetProfiler", "block_list", "load_model", "model_info",
           "save_model"]
