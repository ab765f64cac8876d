import numpy as np
import pytest

from profiler.models import Cnn3dProfiler, block_list, load_model, model_info, save_model
from profiler.models.flops import flops_per_user

TINY = dict(height=16, width=16, dense=(8,))


def volumes(n=3, p=11, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, p, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("variant,convs", [("model1", 4), ("model2", 7)])
def test_shapes_and_probabilities(variant, convs):
    model = Cnn3dProfiler(variant, filters=(4,) * convs, **TINY)
    out = model.predict(volumes(), verbose=0)
    assert {k: v.shape for k, v in out.items()} == {"gender": (3, 2), "location": (3, 6),
                                                    "occupation": (3, 8)}
    for probs in out.values():
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs >= 0).all()


def test_default_parameter_counts_are_pinned():
    assert Cnn3dProfiler("model1").count_params() == 847_696
    assert Cnn3dProfiler("model2").count_params() == 3_504_464


def test_blocks_and_depth_never_collapse():
    assert block_list("model1") == [(32, (2, 2, 2)), (64, (2, 2, 2)), (128, (2, 2, 2)), (256, (2, 2, 2))]
    assert [pool for _, pool in block_list("model2")][-2:] == [(1, 2, 2), (1, 2, 2)]
    for variant in ("model1", "model2"):
        model = Cnn3dProfiler(variant)
        depths = [layer.output.shape[1] for layer in model.layers if layer.name.startswith("pool")
                  and len(layer.output.shape) == 5]
        assert min(depths) >= 1
    with pytest.raises(ValueError, match="model2 has 7 convolutions; got 4"):
        block_list("model2", (4, 4, 4, 4))
    with pytest.raises(ValueError, match="unknown model variant 'model3'"):
        block_list("model3")


def test_save_load_identical_outputs_from_raw_uint8(tmp_path):
    model = Cnn3dProfiler("model2", filters=(4,) * 7, **TINY)
    x = volumes()
    before = model.predict(x, verbose=0)
    path = save_model(model, tmp_path / "m.keras")
    loaded = load_model(path)
    after = loaded.predict(x, verbose=0)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert loaded.inputs[0].dtype == "uint8"
    info = model_info(loaded)
    assert info["variant"] == "model2" and (info["p"], info["height"], info["width"]) == (11, 16, 16)
    assert info["labels"]["location"][0] == "center" and info["profiler_version"]


def test_flops_are_counted_from_the_layers():
    model = Cnn3dProfiler("model1", filters=(4, 4, 4, 4), dense=(8,), height=16, width=16,
                          batch_norm=False)
    expected = (
        11 * 16 * 16 * 3                                  # rescale
        + 2 * (11 * 16 * 16 * 4) * 54 + 2 * 11 * 16 * 16 * 4  # conv1 (2x3x3x3), relu, pool input
        + 2 * (6 * 8 * 8 * 4) * 72 + 2 * 6 * 8 * 8 * 4    # conv2 (2x3x3x4), relu, pool input
        + 2 * (3 * 4 * 4 * 4) * 72 + 2 * 3 * 4 * 4 * 4    # conv3
        + 2 * (2 * 2 * 2 * 4) * 72 + 2 * 2 * 2 * 2 * 4    # conv4
        + 4                                               # global average pool input
        + 2 * 4 * 8                                       # fc1
        + 2 * 8 * (2 + 6 + 8)                             # the three heads
    )
    assert flops_per_user(model) == expected
    assert flops_per_user(Cnn3dProfiler("model1")) == 992_362_496


def test_bad_model_file(tmp_path):
    from core.errors import ModelFileError

    bad = tmp_path / "x.keras"
    bad.write_text("nope")
    with pytest.raises(ModelFileError, match="not a loadable profiler model"):
        load_model(bad)
