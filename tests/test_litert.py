"""The LiteRT runtime of an encoder, on a tiny Keras network (the real one takes 10-20 s to convert)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import ModelFileError
from profiler.encoders.base import Encoder
from profiler.encoders.litert import LiteRTEncoder


class TinyKerasEncoder(Encoder):
    """A 16x16 convolution and a global average: an encoder with a Keras ``network``."""

    name = "tinykeras"
    features = "avg"
    dim = 4
    draft = 16
    chunk = 4

    def __init__(self, weights: Path):
        self.weights = weights
        from profiler.backend import import_keras

        keras = import_keras()
        keras.utils.set_random_seed(0)
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        self.network = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))

    @property
    def weights_path(self) -> Path:
        return self.weights

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((16, 16)), np.float32) / 127.5 - 1

    def _run(self, batch):
        return np.asarray(self.network.predict_on_batch(batch))


@pytest.fixture
def base(tmp_path, monkeypatch):
    monkeypatch.setenv("PROFILER_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"tiny weights")
    return TinyKerasEncoder(weights)


def inputs(base, n=6):
    rng = np.random.default_rng(1)
    return np.stack([base.preprocess(Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)))
                     for _ in range(n)])


def test_float32_gives_the_keras_embeddings_and_int8_close_ones(base):
    x = inputs(base)
    reference = base.embed(x)
    float32, int8 = LiteRTEncoder(base, "float32"), LiteRTEncoder(base, "int8")
    np.testing.assert_allclose(float32.embed(x), reference, atol=1e-5)
    quantised = int8.embed(x)
    assert quantised.shape == reference.shape and quantised.dtype == np.float32
    cosine = (quantised * reference).sum(1) / np.linalg.norm(quantised, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.95
    assert len({base.identity, float32.identity, int8.identity}) == 3
    assert float32.identity.startswith("tinykeras_float32:avg@") and int8.name == "tinykeras_int8"
    np.testing.assert_array_equal(int8.embed(x[:1]), quantised[:1])  # batch-independent


def test_converted_once_then_read_from_the_cache(base, monkeypatch):
    first = LiteRTEncoder(base, "float32")
    path = first.convert()
    assert path.parent == Path(base.weights.parent / "cache" / "encoders") and path.suffix == ".tflite"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left

    def refuse(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(base.network, "export", refuse)
    again = LiteRTEncoder(base, "float32")
    np.testing.assert_array_equal(again.embed(inputs(base)), first.embed(inputs(base)))


def test_a_corrupt_converted_file_is_a_clean_error(base):
    encoder = LiteRTEncoder(base, "int8")
    encoder.model_path.parent.mkdir(parents=True)
    encoder.model_path.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelFileError, match=r"tinykeras_int8-.*\.tflite: not a usable LiteRT model"):
        encoder.embed(inputs(base))


def test_the_modes_are_registered_encoders():
    from profiler.encoders import get_encoder

    encoder = get_encoder("efficientnet_lite0_int8")
    assert isinstance(encoder, LiteRTEncoder) and encoder.mode == "int8" and encoder.dim == 2560
    lite2 = get_encoder("efficientnet_lite2_int8")
    assert lite2.base.variant == 2 and lite2.draft == 260 and lite2.identity.startswith("efficientnet_lite2_int8:")
    with pytest.raises(ValueError, match="mode must be one of"):
        LiteRTEncoder(encoder.base, "int4")
