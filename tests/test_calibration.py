"""Temperature scaling and the calibration measures, against hand-computed values."""
import numpy as np
import pytest
from sklearn.metrics import log_loss as sklearn_log_loss

from profiler.calibration import (apply_temperature, brier, calibrate, calibration_scores,
                                  expected_calibration_error, fit_temperature, log_loss, shift_priors, uncalibrate)


def test_the_temperature_of_a_known_optimum():
    # every user: 0.9 / 0.1 for class 0, which is right for 3 users in 4. Calibrated, 0.9 must
    # become 0.75: 9 ** (1 / T) = 3, so T = 2 exactly.
    probs = np.tile([0.9, 0.1], (400, 1))
    labels = np.array([0, 0, 0, 1] * 100)
    t = fit_temperature(probs, labels)
    assert t == pytest.approx(2.0, abs=1e-3)
    np.testing.assert_allclose(apply_temperature(probs, t)[0], [0.75, 0.25], atol=1e-4)
    # a model right as often as it says needs none
    assert fit_temperature(np.tile([0.75, 0.25], (400, 1)), labels) == pytest.approx(1.0, abs=1e-3)


def test_overconfidence_is_undone():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20000, 6))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(6, p=p) for p in true])
    overconfident = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    assert fit_temperature(overconfident, labels) == pytest.approx(3.0, rel=0.05)
    after = calibration_scores(apply_temperature(overconfident, 3.0), labels)
    before = calibration_scores(overconfident, labels)
    assert after["ece"] < 0.02 < before["ece"] and after["log_loss"] < before["log_loss"]


def test_measures_by_hand():
    probs = np.array([[0.9, 0.1], [0.62, 0.38], [0.22, 0.78], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    # top-label confidences 0.9, 0.62, 0.78, 0.7, each alone in its 1/15-wide bin;
    # right, wrong, right, right
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.62 + 0.22 + 0.3) / 4)
    # two in one bin: |mean correct - mean confidence| weighted by the bin's share
    same_bin = np.array([[0.9, 0.1], [0.91, 0.09]])
    assert expected_calibration_error(same_bin, np.array([0, 1])) == pytest.approx(abs(0.5 - 0.905))
    assert brier(probs, labels) == pytest.approx(np.mean([0.02, 2 * 0.62 ** 2, 2 * 0.22 ** 2, 2 * 0.3 ** 2]))
    assert log_loss(probs, labels) == pytest.approx(sklearn_log_loss(labels, probs))


def test_a_temperature_and_its_inverse_cancel():
    probs = np.random.default_rng(1).dirichlet(np.ones(8), size=5)
    np.testing.assert_allclose(apply_temperature(apply_temperature(probs, 2.5), 1 / 2.5), probs, atol=1e-9)
    assert apply_temperature(probs, 1.0) is not None and np.allclose(apply_temperature(probs, 0.5).sum(1), 1)


def test_the_model_carries_its_temperatures_and_prediction_applies_them(tmp_path):
    from profiler.models import Cnn3dProfiler, load_model, model_info, save_model
    from profiler.prediction import Predictor

    model = Cnn3dProfiler("model1", filters=(4,) * 4, height=16, width=16, dense=(8,),
                          temperatures={"gender": 2.0, "location": 0.5, "occupation": 1.0})
    loaded = load_model(save_model(model, tmp_path / "m.keras"))
    assert model_info(loaded)["temperatures"] == {"gender": 2.0, "location": 0.5, "occupation": 1.0}
    x = np.random.default_rng(0).integers(0, 256, (3, 11, 16, 16, 3), dtype=np.uint8)
    raw = {t: np.asarray(v) for t, v in loaded.predict_on_batch(x).items()}
    probs = Predictor.load(loaded).probabilities(x)
    np.testing.assert_allclose(probs["gender"], apply_temperature(raw["gender"], 2.0), atol=1e-6)
    np.testing.assert_allclose(probs["location"], apply_temperature(raw["location"], 0.5), atol=1e-6)
    np.testing.assert_allclose(probs["occupation"], raw["occupation"], atol=1e-6)
    for t in probs:
        assert (probs[t].argmax(1) == raw[t].argmax(1)).all()


def test_shifting_a_balanced_model_back_to_the_real_shares():
    # posteriors under shares 0.8 / 0.2, as a balanced-weight model learns them: p / share, renormalised
    real = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    balanced = real / [0.8, 0.2]
    balanced /= balanced.sum(1, keepdims=True)
    np.testing.assert_allclose(shift_priors(balanced, [0.8, 0.2]), real, atol=1e-12)
    np.testing.assert_allclose(shift_priors(real, None), real)
    out = calibrate(balanced, 1.7, [0.8, 0.2])
    np.testing.assert_allclose(out, apply_temperature(real, 1.7), atol=1e-12)
    np.testing.assert_allclose(uncalibrate(out, 1.7, [0.8, 0.2]), balanced, atol=1e-9)


def test_prediction_shifts_a_balanced_model_before_its_temperature(tmp_path):
    from core.labels import LABELS
    from profiler.decisions import record
    from profiler.models import Cnn3dProfiler, load_model, save_model
    from profiler.prediction import Predictor

    val = {t: np.full((2, len(v)), 1 / len(v)) for t, v in LABELS.items()}
    train = {t: np.arange(10 * len(v)) % len(v) for t, v in LABELS.items()} | {"gender": np.array([0] * 7 + [1] * 3)}
    decisions = record(val, {t: np.zeros(2, int) for t in LABELS}, train, LABELS, class_weight="balanced",
                       shifted=True)
    model = Cnn3dProfiler("model1", filters=(4,) * 4, height=16, width=16, dense=(8,),
                          temperatures={"gender": 2.0, "location": 1.0, "occupation": 1.0}, decisions=decisions)
    loaded = load_model(save_model(model, tmp_path / "m.keras"))
    x = np.random.default_rng(0).integers(0, 256, (3, 11, 16, 16, 3), dtype=np.uint8)
    raw = np.asarray(loaded.predict_on_batch(x)["gender"])
    shares = [8 / 12, 4 / 12]  # add-one smoothed: (7 + 1) / 12, (3 + 1) / 12
    np.testing.assert_allclose(Predictor.load(loaded).probabilities(x)["gender"],
                               apply_temperature(shift_priors(raw, shares), 2.0), atol=1e-5)
