"""Counting a model's floating-point operations per user from its layers' shapes.

A multiply-add counts as two operations. Convolutions and dense layers dominate; batch
normalisation, activations and pooling are counted as one operation per output (pools:
per input) element. Counted from the built model, not estimated from the paper.
"""
from __future__ import annotations

import numpy as np


def _elements(shape) -> int:
    return int(np.prod([d for d in shape[1:] if d is not None]))


def flops_per_user(model) -> int:
    """Forward-pass floating-point operations for one input sample."""
    import keras

    total = 0
    for layer in model.layers:
        output = getattr(layer, "output", None)
        out = _elements(output.shape) if hasattr(output, "shape") else 0
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            total += 2 * out * int(np.prod(layer.kernel_size))
        elif isinstance(layer, (keras.layers.Conv3D, keras.layers.Conv2D)):
            kernel = int(np.prod(layer.kernel_size)) * int(layer.input.shape[-1])
            total += 2 * out * kernel
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * out * int(layer.input.shape[-1])
        elif isinstance(layer, (keras.layers.MaxPooling3D, keras.layers.GlobalAveragePooling3D,
                                keras.layers.MaxPooling2D, keras.layers.GlobalAveragePooling2D)):
            total += _elements(layer.input.shape)
        elif isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Activation,
                                keras.layers.Rescaling, keras.layers.ReLU, keras.layers.Add)):
            total += out
    return int(total)
