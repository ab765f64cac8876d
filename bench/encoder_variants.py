"""Variants of the default encoder's features, measured against it and left (a plugin).

"Not there yet" in ``docs/science.md`` has what they gave. Each is EfficientNet-Lite2 in
int8, as the default, changed in one way:

- ``efficientnet_lite2_int8_384``: the whole image at 384 px a side instead of 260 (one
  view; about 1.2x the default's two views' time): does a larger input show the small
  telling objects better than the centre crop does?
- ``efficientnet_lite2_int8_centre_stage5``, ``_stage45``, ``_stage6``: the default's two
  views, with the average and maximum over space of an earlier map beside the last's
  (stage 5's output, 208 channels at 1/32 of the input; stages 4 and 5, 120 more at 1/16;
  stage 6's output, the head convolution's 352-channel input): do layers less tuned to
  ImageNet's classes tell the emoji apart better?
- ``efficientnet_lite2_int8_centre_nsfw``: the default's embedding with open_nsfw's beside
  it (3,584-d; about 2.7x the default's time), as the issue suggested: does a network
  trained on pictures of people add what ImageNet's lacks for gender?

Load as a plugin, then name the encoder, e.g.:
  PROFILER_PLUGINS=bench.encoder_variants .venv/bin/python -m bench.science data/science/s0 \\
      --encoder efficientnet_lite2_int8_centre_stage6 --poolings latent \\
      --embeddings runs/bench/variants.sqlite --out runs/bench/stage6_s0
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
from PIL import Image

from profiler.encoders import _crops, _litert, get_encoder, register_encoder
from profiler.encoders.base import Encoder
from profiler.encoders.efficientnet_lite import EfficientNetLite2Encoder

#: the layers whose *input* is a stage's output: block 15 opens stage 5, block 20 stage 6,
#: and the head convolution follows stage 6 (Lite2's blocks: 1, 3, 3, 4, 4, 5, 1 by stage)
STAGE_OUTPUTS = {"4": ("blocks.15._expand_conv", 120), "5": ("blocks.20._expand_conv", 208),
                 "6": ("conv_head", 352)}


class Lite2At384(EfficientNetLite2Encoder):
    name = "efficientnet_lite2_384"
    size = draft = 384


def with_stages(stages: str) -> type[EfficientNetLite2Encoder]:
    """Lite2 whose embedding adds the average and maximum of each of ``stages``' outputs."""

    class Lite2WithStages(EfficientNetLite2Encoder):
        name = f"efficientnet_lite2_stage{stages}"
        dim = EfficientNetLite2Encoder.dim + sum(2 * STAGE_OUTPUTS[s][1] for s in stages)

        @property
        def features(self) -> str:
            return f"{super().features}+stage{stages}"

        @cached_property
        def network(self):
            from profiler.backend import import_keras

            keras = import_keras()
            base = super().network
            pooled = [base.output]
            for s in stages:
                x = base.get_layer(STAGE_OUTPUTS[s][0]).input
                pooled += [keras.layers.GlobalAveragePooling2D()(x), keras.layers.GlobalMaxPooling2D()(x)]
            return keras.Model(base.input, keras.layers.Concatenate()(pooled), name=self.name)

    return Lite2WithStages


class Beside(Encoder):
    """Two encoders' embeddings side by side. An image's input is both inputs flattened one
    after the other (their shapes are the encoders' own, read once from a blank image)."""

    description = "two encoders' embeddings side by side"

    def __init__(self, first: Encoder, second: Encoder):
        self.first, self.second = first, second
        self.name = f"{first.name}+{second.name}"
        self.features = f"{first.features}|{second.features}"
        self.dim = first.dim + second.dim
        self.draft = max(first.draft, second.draft)
        self.chunk = min(first.chunk, second.chunk)
        blank = Image.new("RGB", (64, 64))
        self.shapes = (first.preprocess(blank).shape, second.preprocess(blank).shape)

    @property
    def weights_path(self):
        return self.first.weights_path

    @property
    def identity(self) -> str:
        return f"{self.first.identity}|{self.second.identity}"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return np.concatenate([self.first.preprocess(image).ravel(), self.second.preprocess(image).ravel()])

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        if len(inputs) == 0:
            return np.zeros((0, self.dim), np.float32)
        cut = int(np.prod(self.shapes[0]))
        return np.concatenate([self.first.embed(inputs[:, :cut].reshape(len(inputs), *self.shapes[0])),
                               self.second.embed(inputs[:, cut:].reshape(len(inputs), *self.shapes[1]))],
                              axis=1).astype(np.float32)


register_encoder("efficientnet_lite2_int8_centre_nsfw",
                 lambda: Beside(get_encoder("efficientnet_lite2_int8_centre"), get_encoder("open_nsfw")))
register_encoder("efficientnet_lite2_int8_384", _litert(Lite2At384, "int8"))
for _stages in ("5", "45", "6"):
    register_encoder(f"efficientnet_lite2_int8_centre_stage{_stages}",
                     _crops(_litert(with_stages(_stages), "int8"), ("centre",), "centre"))
