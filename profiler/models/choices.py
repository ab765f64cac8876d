"""What each model offers to choose, free of Keras so the configuration and the CLI can read it.

The models (``cnn3d``, ``set_head``) import these; ``profiler.config`` validates against them.
"""
from __future__ import annotations

#: the paper's two 3D CNNs
VARIANTS = ("model1", "model2")
#: how a 3D CNN's trunk is reduced before the classification stage
POOLINGS = ("avg", "flatten")
#: default filters per variant (one per convolution)
DEFAULT_FILTERS = {"model1": (32, 64, 128, 256), "model2": (32, 64, 128, 128, 256, 256, 256)}

#: poolings of per-image features before the set model's classification stage
FEATURE_POOLINGS = ("mean", "sum", "max", "meanmax", "attention")
#: every pooling of the set model: the last three add up per-image evidence instead of
#: pooling features ("latent": each image's log-likelihood of every label combination)
SET_POOLINGS = FEATURE_POOLINGS + ("evidence", "neighbours", "latent")
#: the poolings whose per-image evidence comes from a fixed bank of training images
BANK_POOLINGS = ("neighbours", "latent")
#: the most images per user the set model reads by default
DEFAULT_CAP = 32
