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
    with pytest.raises(ModelFileError, match=r"x.keras: not a .keras model file \(not a zip archive: "
                                             r"truncated, or another kind of file\)"):
        load_model(bad)
    import zipfile

    with zipfile.ZipFile(bad, "w") as archive:  # a zip archive, but not a Keras model's
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError, match="x.keras: not a loadable profiler model"):
        load_model(bad)


def test_volume_batch_norm_computes_what_keras_batch_norm_does():
    import keras
    import tensorflow as tf

    from profiler.models.cnn3d import VolumeBatchNorm

    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, (4, 5, 6, 7, 8)), tf.float32)
    ours, theirs = VolumeBatchNorm(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    ours.build(x.shape), theirs.build(x.shape)
    rng = np.random.default_rng(2)
    weights = [rng.normal(1, 0.1, 8), rng.normal(0, 0.1, 8), rng.normal(0, 0.1, 8), rng.uniform(0.5, 2, 8)]
    ours.set_weights(weights), theirs.set_weights(weights)
    assert ours.fused(x) and not ours.fused(x[0])  # a 5D float32 map takes the fused kernel; 4D is Keras'
    for training in (True, False):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            a, b = ours(x, training=training), theirs(x, training=training)
            la, lb = tf.reduce_sum(a * a), tf.reduce_sum(b * b)
        assert a.shape == x.shape
        np.testing.assert_allclose(a, b, atol=2e-5)
        np.testing.assert_allclose(tape.gradient(la, x), tape.gradient(lb, x), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(tape.gradient(la, ours.gamma), tape.gradient(lb, theirs.gamma), rtol=1e-4)
        # the moving statistics move alike in training and stay put in inference
        for mine, keras_own in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_allclose(mine, keras_own, rtol=1e-5, atol=1e-6)
    frozen = VolumeBatchNorm()
    frozen.build(x.shape)
    frozen.trainable = False  # a frozen layer normalises with its moving statistics, as Keras' does
    np.testing.assert_allclose(frozen(x, training=True), frozen(x, training=False))


def test_the_3d_cnns_use_the_fused_batch_norm():
    from profiler.models.cnn3d import VolumeBatchNorm

    model = Cnn3dProfiler("model1", filters=(4,) * 4, **TINY)
    assert sum(isinstance(layer, VolumeBatchNorm) for layer in model.layers) == 4


def test_a_model_saved_with_keras_batch_norm_loads_with_the_fused_one(tmp_path):
    import keras

    from profiler.models import cnn3d

    fused = cnn3d.VolumeBatchNorm
    cnn3d.VolumeBatchNorm = keras.layers.BatchNormalization  # as the package built them before
    try:
        old = Cnn3dProfiler("model1", filters=(4,) * 4, **TINY)
    finally:
        cnn3d.VolumeBatchNorm = fused
    assert not any(isinstance(layer, fused) for layer in old.layers)
    x = volumes()
    rng = np.random.default_rng(3)  # weights and moving statistics no fresh model has
    old.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in old.get_weights()])
    save_model(old, tmp_path / "old.keras")
    loaded = load_model(tmp_path / "old.keras")
    assert sum(isinstance(layer, fused) for layer in loaded.layers) == 4
    for before, after in zip(old.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(before, after)
    a, b = old.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for trait in a:
        np.testing.assert_allclose(a[trait], b[trait], atol=1e-5)
