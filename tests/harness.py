"""The checks every model family passes, run by ``tests/test_families.py`` over each one.

After keras-hub's ``run_backbone_test`` / ``run_model_saving_test``: a new family gets
all of them by being added to the parametrisation there, not by copying them.
"""
from __future__ import annotations

import json

import numpy as np

from core.labels import LABELS, TRAITS

ATOL = 1e-5


def outputs(model, x) -> dict[str, np.ndarray]:
    return {t: np.asarray(v) for t, v in model(x, training=False).items()}


def run_model_test(family, config, data, tmp_path, *, users: int = 5) -> None:
    """Build ``family``'s model for ``config`` on ``data`` and check it end to end."""
    from profiler.models.io import load_model, model_info, save_model
    from profiler.training import EpochData, compile_model, set_determinism

    set_determinism(config.seed)
    positions = np.arange(len(data))
    model = family.build(config, data, positions)
    chosen = positions[:users]
    x = family.batch(data, chosen, config, None)

    # output shapes, probabilities that sum to 1
    out = outputs(model, x)
    assert {t: v.shape for t, v in out.items()} == {t: (users, len(LABELS[t])) for t in TRAITS}
    for v in out.values():
        assert (v >= 0).all() and np.allclose(v.sum(axis=1), 1.0, atol=ATOL)

    # get_config -> from_config: the same config, and with the same weights the same outputs
    clone = type(model).from_config(model.get_config())
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    clone.set_weights(model.get_weights())
    for t, v in outputs(clone, x).items():
        np.testing.assert_array_equal(v, out[t])

    # save -> load: identical outputs and the info prediction needs
    path = save_model(model, tmp_path / f"{config.model}.keras")
    loaded = load_model(path)
    for t, v in outputs(loaded, x).items():
        np.testing.assert_array_equal(v, out[t])
    info = model_info(loaded)
    assert info["variant"] == config.model and info["labels"] == {t: list(LABELS[t]) for t in TRAITS}

    # batch invariance: each user alone gets what they got in the batch
    for k in range(users):
        for t, v in outputs(model, x[k:k + 1]).items():
            np.testing.assert_allclose(v[0], out[t][k], atol=ATOL)

    # prediction reads a user as training does (one input builder for both)
    reader = family.reader(info, name=str(path))
    for k in chosen:
        user = featurized(data, int(k))
        np.testing.assert_array_equal(reader.inputs(user, 0, 0), family.batch(data, [k], config, None))

    # one fit step changes the trained weights and gives a finite loss
    fitted, fitted_data = family.split(model, data, positions)
    epoch = EpochData(family, fitted_data, positions, config, train=True)
    compile_model(fitted, config, len(epoch))
    before = [np.array(w.numpy()) for w in fitted.trainable_weights]
    xb, yb, wb = next(epoch.batches())
    loss = fitted.train_on_batch(xb, yb, sample_weight=wb, return_dict=True)["loss"]
    assert np.isfinite(loss)
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, fitted.trainable_weights))


def featurized(data, i: int):
    """User ``i`` of training data as the family's reader gets them at prediction time."""
    from data_prep.cache import Cache, DecodedUser
    from profiler.embeddings import EmbeddedUser

    if isinstance(data, Cache):
        return DecodedUser(data.user_ids[i], np.asarray(data.user_images(i)), [], [])
    return EmbeddedUser(data.user_ids[i], data.user_images(i), [], [])
