"""The real pretrained encoders: weights load offline, preprocessing, batch invariance."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import ConfigError
from profiler.encoders import get_encoder
from profiler.encoders.base import Encoder
from tests.helpers import COLORS


def images(n=5):
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        a = rng.integers(0, 255, (40 + 7 * k, 60, 3), np.uint8)
        a[5:20, 5:30] = COLORS[k]
        out.append(Image.fromarray(a))
    return out


def test_state_dict_reads_without_pytorch():
    from profiler.encoders.efficientnet_lite import EfficientNetLite0Encoder
    from profiler.encoders.torch_pickle import load_state_dict

    weights = load_state_dict(EfficientNetLite0Encoder().weights_path)
    assert len(weights) == 296
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_fc.weight"].shape == (1000, 1280) and weights["_fc.weight"].dtype == np.float32
    assert weights["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)


def test_lite2_stages_as_tensorflow_scales_them():
    """Lite2: widths x1.1 rounded to multiples of 8, depths x1.2 rounded up, first and last stages kept."""
    from profiler.encoders.efficientnet_lite import STAGES, round_filters, stages

    assert stages(0) == list(STAGES)
    assert [s[0] for s in stages(2)] == [1, 3, 3, 4, 4, 5, 1]
    assert [s[4] for s in stages(2)] == [16, 24, 48, 88, 120, 208, 352]
    assert round_filters(112, 1.1) == 120 and round_filters(192, 1.1) == 208  # 123.2 -> 120, 211.2 -> 208
    assert round_filters(10, 0.5) == 8 and round_filters(20, 1.0) == 24  # never under 8; 16 < 0.9 * 20


@pytest.mark.parametrize("variant", [0, 2])
def test_efficientnet_weights_recognise_an_imagenet_class(variant):
    """The Twemoji soccer ball is ImageNet class 805 ('soccer ball'): the weights are in the right places,
    and every tensor of the state dict is used."""
    from data_prep.images import open_rgb
    from data_prep.sample.catalog import asset_dir
    from profiler.encoders.efficientnet_lite import (EfficientNetLite0Encoder, EfficientNetLite2Encoder,
                                                     build_efficientnet_lite)
    from profiler.encoders.torch_pickle import load_state_dict

    encoder = {0: EfficientNetLite0Encoder, 2: EfficientNetLite2Encoder}[variant]()
    weights = load_state_dict(encoder.weights_path)
    network = build_efficientnet_lite(weights, variant=variant, classifier=True)
    x = encoder.preprocess(open_rgb(asset_dir() / "26bd.png"))[None]
    assert x.shape == (1, *{0: (224, 224), 2: (260, 260)}[variant], 3)
    _, logits = network.predict_on_batch(x)
    assert int(np.argmax(logits)) == 805
    tracked = sum(int(np.prod(v.shape)) for k, v in weights.items() if not k.endswith("num_batches_tracked"))
    assert network.count_params() == tracked


@pytest.mark.parametrize("name", ["efficientnet_lite0", "open_nsfw"])
def test_embedding_does_not_depend_on_the_batch(name):
    encoder = get_encoder(name)
    x = np.stack([encoder.preprocess(im) for im in images(5)])
    assert x.shape == (5, 224, 224, 3) and x.dtype == np.float32
    together = encoder.embed(x)
    alone = np.concatenate([encoder.embed(x[i:i + 1]) for i in range(5)])
    reordered = encoder.embed(x[::-1])[::-1]
    assert together.shape == (5, encoder.dim) and together.dtype == np.float32
    assert np.array_equal(together, alone) and np.array_equal(together, reordered)
    assert not np.allclose(together[0], together[1])
    assert encoder.identity.startswith(f"{name}:") and len(encoder.identity.split("@")[1]) == 12


def test_another_input_size_keeps_the_weights_and_the_embedding_width():
    """``size`` changes the input (and the preprocessing's square), not the network's weights."""
    from profiler.encoders.efficientnet_lite import EfficientNetLite0Encoder, build_efficientnet_lite

    class At96(EfficientNetLite0Encoder):
        size = 96

    network = build_efficientnet_lite(variant=0, features="avgmax", size=96)
    assert network.input_shape == (None, 96, 96, 3) and network.output_shape == (None, 2560)
    assert network.count_params() == build_efficientnet_lite(variant=0).count_params()
    assert At96().preprocess(Image.new("RGB", (300, 150))).shape == (96, 96, 3)
    # the size is in the identity (and so in a LiteRT file's key): never mixed with the variant's own
    assert At96().features == "avgmax,96px" and EfficientNetLite0Encoder().features == "avgmax"
    assert At96().identity != EfficientNetLite0Encoder().identity


def test_preprocessing_as_the_weights_expect():
    from profiler.encoders.efficientnet_lite import EfficientNetLite0Encoder
    from profiler.encoders.open_nsfw import OpenNsfwEncoder

    white = Image.new("RGB", (300, 150), (255, 255, 255))
    x = EfficientNetLite0Encoder().preprocess(white)
    assert x.shape == (224, 224, 3)
    assert x[112, 112, 0] == pytest.approx((255 - 127) / 128)  # RGB, (x - 127) / 128
    assert x[0, 0, 0] == pytest.approx(-127 / 128)  # letterboxed: the pad is black
    red = Image.new("RGB", (256, 256), (255, 0, 0))
    y = OpenNsfwEncoder().preprocess(red)
    assert y.shape == (224, 224, 3)
    b, g, r = y[100, 100]  # BGR minus the Caffe means (104, 117, 123), after a JPEG round trip
    assert abs(r - (255 - 123)) < 6 and abs(b - (0 - 104)) < 6


def test_unknown_encoder():
    with pytest.raises(ConfigError, match="unknown encoder 'open_nsf'.*did you mean 'open_nsfw'"):
        get_encoder("open_nsf")


def test_one_default_encoder():
    """The set model's default encoder and ``profiler embed``'s are the same: Lite2 in int8 on
    the whole image and its centre crop of 2/3, decoded large enough for the crop."""
    from profiler.config import TrainConfig
    from profiler.encoders import DEFAULT_ENCODER, ENCODERS
    from profiler.encoders.multicrop import MultiCropEncoder

    assert TrainConfig().encoder == DEFAULT_ENCODER == "efficientnet_lite2_int8_centre" and DEFAULT_ENCODER in ENCODERS
    encoder = get_encoder()
    assert isinstance(encoder, MultiCropEncoder) and encoder.crops == ("centre",) and encoder.views == 2
    assert encoder.base.identity.startswith("efficientnet_lite2_int8:") and encoder.draft == 390
    assert encoder.preprocess(images(1)[0]).shape == (2, 260, 260, 3)


def test_multicrop_views_and_embedding():
    """Six views (whole, four corners, centre at 2/3 of each side), embedded by the base and averaged;
    the identity names the views; batching does not change an image's embedding."""
    from profiler.encoders.multicrop import MultiCropEncoder, views

    image = Image.fromarray(np.arange(90 * 60 * 3, dtype=np.uint8).reshape(60, 90, 3))
    got = views(image)
    assert [v.size for v in got] == [(90, 60)] + [(60, 40)] * 5
    assert np.array_equal(np.asarray(got[4]), np.asarray(image)[20:60, 30:90])  # bottom right
    assert np.array_equal(np.asarray(got[5]), np.asarray(image)[10:50, 15:75])  # centre

    class Mean(Encoder):  # a stand-in base: each view's mean colour
        name, features, dim, chunk = "meanrgb", "avg", 3, 4
        weights_path = property(lambda self: Path(__file__))

        def preprocess(self, im):
            return np.asarray(im.resize((8, 8)), np.float32)

        def _run(self, batch):
            return batch.mean(axis=(1, 2))

    encoder = MultiCropEncoder(Mean())
    x = np.stack([encoder.preprocess(im) for im in images(3)])
    assert x.shape == (3, 6, 8, 8, 3)
    out = encoder.embed(x)
    expected = np.stack([np.mean([Mean().preprocess(v).mean(axis=(0, 1)) for v in views(im)], axis=0)
                         for im in images(3)])
    assert out.shape == (3, 3) and np.allclose(out, expected, atol=1e-5)
    assert np.array_equal(out, np.concatenate([encoder.embed(x[i:i + 1]) for i in range(3)]))
    assert encoder.identity.startswith("meanrgb_crops:avg+mean(full,top_left,top_right,bottom_left,bottom_right,"
                                       "centre)x0.6667@") and encoder.embed(x[:0]).shape == (0, 3)
    assert encoder.draft == 384  # 256 / (2/3): a crop decoded at the base's resolution


def test_multicrop_centre_view_set():
    """Two views (whole and centre): their mean, an identity apart from the six views', bad sets refused."""
    from profiler.encoders.multicrop import MultiCropEncoder, views

    image = Image.fromarray(np.arange(90 * 60 * 3, dtype=np.uint8).reshape(60, 90, 3))
    got = views(image, ("centre",), 0.5)
    assert [v.size for v in got] == [(90, 60), (45, 30)]
    assert np.array_equal(np.asarray(got[1]), np.asarray(image)[15:45, 22:67])

    class Sum(Encoder):  # a stand-in base: each view's pixel sum
        name, features, dim, chunk = "sum", "s", 1, 2
        weights_path = property(lambda self: Path(__file__))

        def preprocess(self, im):
            return np.asarray(im, np.float64).sum().reshape(1)

        def _run(self, batch):
            return batch

    two = MultiCropEncoder(Sum(), ("centre",), 0.5, suffix="centre")
    six = MultiCropEncoder(Sum())
    x = two.preprocess(image)
    assert x.shape == (2, 1)
    whole, centre = float(np.asarray(image, np.float64).sum()), float(np.asarray(image, np.float64)[15:45, 22:67].sum())
    assert np.isclose(two.embed(x[None])[0, 0], (whole + centre) / 2)
    assert two.name == "sum_centre" and two.identity.startswith("sum_centre:s+mean(full,centre)x0.5000@")
    assert len({two.identity, six.identity, Sum().identity}) == 3
    with pytest.raises(ValueError, match="crops must be some of"):
        MultiCropEncoder(Sum(), ("middle",))
    with pytest.raises(ValueError, match="0 < fraction < 1"):
        MultiCropEncoder(Sum(), ("centre",), 1.0)
