"""The paper's two 3D CNNs: one trunk builder, two block lists.

Input: a user's volume of ``p`` images, uint8, shape ``(p, height, width, 3)``; scaling to
[0, 1] happens inside the model, so a saved model takes raw volumes.

Choices the paper leaves open, and why:

- **Filters** 32-64-128-256 (doubling as the resolution halves, as in Ji et al. and C3D);
  Model 2's seven layers use 32-64-128-128-256-256-256. Configurable (the tests use 4).
- **Padding** ``same`` for convolutions and pools. With p = 11 the depth axis goes
  11 -> 6 -> 3 -> 2 -> 1 under four 2x2x2 pools; with ``valid`` pooling it would reach 0
  at the fourth pool.
- **Normalisation**: batch normalisation (momentum 0.9, so its running statistics keep up
  with short runs on a few thousand users) after every convolution (as in keras-io's 3D
  CNN example), which lets the default preset train at a sane learning rate from scratch:
  without it neither model learnt anything in the demo's 8 epochs (validation mean
  macro-F 0.152 against 0.222 for Model 1, 0.129 against 0.232 for Model 2;
  ``results/step_cost.md``). It runs through TensorFlow's fused kernel
  (``VolumeBatchNorm``): a training step at 0.85-0.87x a plain sketch's without batch norm,
  against 0.67-0.74x with Keras' own layer.
- **Model 2's pooling** (after Hou et al.'s T-CNN): 2x2x2 after the first layers, then
  1x2x2 after the last ones ("reduces the input volume just in h and w").
- **Classification stage**: global average pooling over (depth, h, w), then fully
  connected ReLU layers with dropout, then the three softmax heads. Averaging, rather
  than flattening, keeps the head small (fewer parameters to overfit a few thousand
  users) and independent of the image size; ``pooling="flatten"`` gives the literal
  reading instead.
"""
from __future__ import annotations

from profiler.backend import import_keras

keras = import_keras()  # before Keras: the backend's settings and quiet start-up

from core.labels import TRAITS, label_space
from profiler import __version__
from profiler.models.choices import DEFAULT_FILTERS, POOLINGS, VARIANTS
from profiler.models.heads import check_config, classification_stage, temperatures_of, trait_heads


def block_list(variant: str, filters: tuple[int, ...] | None = None) -> list[tuple[int, tuple | None]]:
    """``(filters, pool)`` for each Conv3D of a variant; ``pool`` None means no pooling after it.

    Model 1: four convolutions, each followed by a 2x2x2 max-pool.
    Model 2: seven convolutions in five groups (1, 1, 2, 2, 1), pooled 2x2x2 after the first
    three groups and 1x2x2 (h and w only) after the last two.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; expected one of {VARIANTS}")
    filters = tuple(filters or DEFAULT_FILTERS[variant])
    expected = len(DEFAULT_FILTERS[variant])
    if len(filters) != expected:
        raise ValueError(f"{variant} has {expected} convolutions; got {len(filters)} filter counts")
    if variant == "model1":
        return [(f, (2, 2, 2)) for f in filters]
    pools = [(2, 2, 2), (2, 2, 2), None, (2, 2, 2), None, (1, 2, 2), (1, 2, 2)]
    return list(zip(filters, pools))


@keras.saving.register_keras_serializable(package="profiler")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' batch normalisation of a (n, depth, h, w, c) feature map, run by TensorFlow's
    fused kernel.

    The same computation, weights and moving statistics as ``BatchNormalization`` over the
    last axis (each channel normalised over n, depth, h and w): the map is viewed as
    (n, depth * h, w, c) and normalised by ``FusedBatchNormV3``, one pass in C++ (with its
    fused gradient) where Keras composes moments, normalisation and their gradients from
    separate ops for any input that is not 4D. Measured in one process on a 2-core AVX2
    EPYC, a training step of Model 1 at 64 px: 29.0-30.6 users/s with Keras' layer, 36.9-39.6
    with this one, 45.6-46.3 without batch normalisation (``results/step_cost.md``). Outputs agree with
    Keras' layer within 3e-5. Any other case (another backend, a mask, another axis or
    rank, inputs that are not float32) is left to Keras' own computation.
    """

    def fused(self, inputs, mask=None) -> bool:
        """Whether ``inputs`` go through the fused kernel (else through Keras' computation)."""
        return (keras.backend.backend() == "tensorflow" and mask is None and len(inputs.shape) == 5
                and self.axis in (-1, 4) and keras.backend.standardize_dtype(inputs.dtype) == "float32"
                and not self.renorm and self.scale and self.center)

    def call(self, inputs, training=None, mask=None):
        import tensorflow as tf

        if not self.fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        shape = tf.shape(inputs)
        x = tf.reshape(inputs, tf.stack([shape[0], shape[1] * shape[2], shape[3], shape[4]]))
        if training and self.trainable:
            y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=self.gamma, offset=self.beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
            # the kernel returns the unbiased variance; Keras' moving statistics use the biased one
            count = tf.cast(tf.reduce_prod(shape[:4]), tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=self.gamma, offset=self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, data_format="NHWC", is_training=False)
        return tf.reshape(y, shape)


#: The fused layer goes by Keras' class name because a ``.keras`` file keeps each layer's
#: weights under its snake-cased class name (``layers/batch_normalization_3``): under the
#: same name, models saved with Keras' layer load into this one and the other way round.
VolumeBatchNorm = BatchNormalization


def build_trunk(x, blocks: list[tuple[int, tuple | None]], *, batch_norm: bool = True):
    """Conv3D (2x3x3, same) -> [BatchNorm] -> ReLU -> [MaxPool3D] for each block."""
    for i, (filters, pool) in enumerate(blocks, 1):
        x = keras.layers.Conv3D(filters, (2, 3, 3), padding="same", use_bias=not batch_norm,
                                name=f"conv{i}")(x)
        if batch_norm:
            x = VolumeBatchNorm(momentum=0.9, name=f"conv{i}_bn")(x)
        x = keras.layers.Activation("relu", name=f"conv{i}_relu")(x)
        if pool is not None:
            x = keras.layers.MaxPooling3D(pool, padding="same", name=f"pool{i}")(x)
    return x


@keras.saving.register_keras_serializable(package="profiler")
class Cnn3dProfiler(keras.Model):
    """A 3D CNN over a user's image volume with gender, location and occupation heads.

    Outputs a dict ``{"gender": (n, 2), "location": (n, 6), "occupation": (n, 8)}`` of
    probabilities (the raw softmax; ``temperatures`` calibrate them at prediction). The
    constructor arguments are the config; the saved model carries its label
    vocabularies, ``p``, the image size, the temperatures and the package version.
    """

    def __init__(self, variant: str = "model1", p: int = 11, height: int = 64, width: int = 64,
                 filters: tuple[int, ...] | None = None, dense: tuple[int, ...] = (256,),
                 dropout: float = 0.5, batch_norm: bool = True, pooling: str = "avg",
                 image_fit: str = "pad", labels: dict | None = None,
                 profiler_version: str | None = None, temperatures: dict | None = None,
                 decisions: dict | None = None, ood: dict | None = None, **kwargs):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        labels = labels or label_space()
        check_config(labels, temperatures, decisions, ood, p=p, height=height, width=width, filters=list(filters or []),
                     dense=list(dense))
        blocks = block_list(variant, filters)
        inputs = keras.Input((p, height, width, 3), dtype="uint8", name="volume")
        x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
        x = build_trunk(x, blocks, batch_norm=batch_norm)
        if pooling == "avg":
            x = keras.layers.GlobalAveragePooling3D(name="pool")(x)
        else:
            x = keras.layers.Flatten(name="pool")(x)
        x = classification_stage(x, tuple(dense), dropout)
        outputs = trait_heads(x, labels)
        kwargs.setdefault("name", variant)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.variant = variant
        self.p, self.height, self.width = p, height, width
        self.filters = tuple(f for f, _ in blocks)
        self.dense = tuple(dense)
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.pooling = pooling
        self.image_fit = image_fit  # how images were resized for it (pad/crop); predict uses it
        self.labels = {t: list(labels[t]) for t in TRAITS}
        self.profiler_version = profiler_version or __version__
        self.temperatures = temperatures_of(temperatures)  # fitted after training; see calibration
        self.decisions = decisions  # recorded after training; see profiler.decisions
        self.ood = ood  # recorded after training; see profiler.ood

    def get_config(self) -> dict:
        return {"variant": self.variant, "p": self.p, "height": self.height, "width": self.width,
                "filters": list(self.filters), "dense": list(self.dense), "dropout": self.dropout,
                "batch_norm": self.batch_norm, "pooling": self.pooling, "image_fit": self.image_fit,
                "labels": self.labels, "temperatures": self.temperatures, "decisions": self.decisions, "ood": self.ood,
                "profiler_version": self.profiler_version, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> "Cnn3dProfiler":
        config = dict(config)
        for key in ("filters", "dense"):
            config[key] = tuple(config[key])
        return cls(**config)
