"""The out-of-distribution score: the residual by hand, its record, the rule that abstains on it,
and the score in every output."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from core.errors import ConfigError
from profiler import ood
from profiler.decisions import Decider, split_ood
from tests.helpers import make_dataset, train_tiny_set


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def circle(n):
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles), np.zeros(n)], axis=1) * 3.0


def test_the_score_is_the_distance_off_the_training_plane():
    # training items on a circle in the x-y plane (any length: they are normalised); axes x and y
    record = ood.fit(circle(64), [circle(8)[:2], np.array([[0.0, 0.0, 5.0]])])
    scorer = ood.Scorer(record)
    assert scorer.score(np.array([[2.0, 0.0, 0.0]])) == pytest.approx(0.0, abs=1e-6)
    assert scorer.score(np.array([[0.0, 0.0, 7.0]])) == pytest.approx(1.0, abs=1e-6)
    # (1, 0, 1) normalised: z = 1/sqrt(2) is off the plane; the mean over items
    assert scorer.score(np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])) == pytest.approx(0.5 / np.sqrt(2), abs=1e-6)
    assert np.isnan(scorer.score(np.zeros((0, 3))))
    assert record["validation"] == pytest.approx([0.0, 1.0], abs=1e-6)  # sorted validation users


def test_rank_and_threshold():
    scorer = ood.Scorer({"mean": [0.0], "axes": [[1.0]], "validation": [0.1, 0.2, 0.3, 0.4]})
    assert scorer.rank(0.25) == 0.5 and scorer.rank(0.05) == 0.0 and scorer.rank(0.9) == 1.0
    assert scorer.threshold(0.5) == pytest.approx(0.25)
    assert np.isnan(scorer.rank(float("nan")))


@pytest.mark.parametrize("record, message", [
    ({"mean": [0.0]}, "ood must hold mean, axes and validation"),
    ({"mean": [], "axes": [], "validation": []}, "mean must be a list of 1 to"),
    ({"mean": [0.0, 0.0], "axes": [[1.0]], "validation": []}, "axes must be 1 to 32 rows as long as the mean"),
    ({"mean": [0.0], "axes": [[1.0]] * 33, "validation": []}, "axes must be 1 to 32 rows"),
    ({"mean": [0.0], "axes": [[1.0]], "validation": [0.0] * 200_001}, "validation must be a list of at most 200,000"),
    ({"mean": [0.0], "axes": [["x"]], "validation": []}, "the record must hold numbers only"),
    ({"mean": [float("nan")], "axes": [[1.0]], "validation": []}, "the record must hold finite numbers only"),
])
def test_a_bad_record_is_refused(record, message):
    with pytest.raises(ValueError, match=message):
        ood.check_record(record)


def test_a_crafted_model_file_is_refused_before_building():
    from profiler.models.set_head import SetProfiler

    with pytest.raises(ValueError, match="ood: axes must be"):
        SetProfiler(8, cap=4, ood={"mean": [0.0] * 8, "axes": [[0.0] * 9], "validation": []})


def test_split_ood():
    assert split_ood("balanced,ood=0.99") == ("balanced", 0.99)
    assert split_ood("ood=.9") == (None, 0.9) and split_ood("precision=0.9") == ("precision=0.9", None)
    for bad in ("ood=1", "ood=0.9,ood=0.8", "argmax,balanced,ood=0.5", "ood=x"):
        with pytest.raises(ConfigError, match="give one rule and at most one ood=Q"):
            split_ood(bad)


def test_the_rule_abstains_above_the_validation_quantile():
    labels = {"gender": ["female", "male"]}
    info = {"labels": labels, "decisions": None,
            "ood": {"mean": [0.0], "axes": [[1.0]], "validation": [0.1, 0.2, 0.3, 0.4, 0.5]}}
    decider = Decider("argmax,ood=0.5", info)
    assert decider.text == "argmax,ood=0.5" and decider.describe()["ood_threshold"] == 0.3
    assert decider.abstains(0.31) and not decider.abstains(0.3) and not decider.abstains(None)
    assert not Decider("argmax", info).abstains(9.0)
    with pytest.raises(ConfigError, match="needs the out-of-distribution record"):
        Decider("ood=0.5", {"labels": labels, "decisions": None, "ood": None}, name="m.keras")


def test_check_by_hand():
    report = ood.check(np.array([0.1, 0.2, np.nan]), {"solid": np.array([0.15, 0.9]), "noise": np.array([0.8])},
                       validation=[0.1, 0.2])
    # known 0.1 is below all three unusual scores, 0.2 below two of them (not 0.15): 5 of 6 pairs
    assert report["roc_auc"] == pytest.approx(5 / 6)
    assert report["roc_auc_per_kind"] == {"solid": 0.75, "noise": 1.0}
    assert report["known_users"] == 2 and report["unusual_users"] == {"solid": 2, "noise": 1}
    # threshold at 0.99: 0.199 -> known 0.2 abstains (1 of 2), unusual 0.9, 0.8 (2 of 3)
    assert report["abstain"]["0.99"] == {"known": 0.5, "unusual": pytest.approx(2 / 3)}


def test_a_3d_cnn_item_reads_every_depth():
    from profiler.backend import import_keras
    from profiler.families import VOLUMES
    from profiler.models.cnn3d import Cnn3dProfiler

    keras = import_keras()
    model = Cnn3dProfiler("model1", filters=(4,) * 4, height=16, width=16, dense=(8,))
    x = np.random.default_rng(0).integers(0, 256, (3, 11, 16, 16, 3), dtype=np.uint8)
    outputs, items = VOLUMES.runner(model)(x)
    assert [i.shape for i in items] == [(1, 5 * 4)] * 3  # four conv blocks and the pooled vector, 4 wide each
    np.testing.assert_allclose(outputs["gender"], model.predict_on_batch(x)["gender"], rtol=1e-5)
    pooled = np.asarray(keras.Model(model.inputs, model.get_layer("pool").output).predict_on_batch(x))
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(np.stack(items)[:, 0, -4:], unit / np.sqrt(5), rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood")
    data = make_dataset(root / "data", {f"u{i:02d}": [2, 3, 5][i % 3] for i in range(24)})
    train_tiny_set(data, root / "run", root / "e.sqlite")
    return root, data


def test_every_output_carries_the_score_and_the_rule_abstains_on_it(trained):
    from profiler.models.io import load_model, model_info, save_model

    root, data = trained
    model = root / "run" / "model.keras"
    record = model_info(load_model(model))["ood"]
    assert len(record["validation"]) >= 1 and len(record["mean"]) == 8  # the tiny encoder's width
    common = ["--model", model, "-q", "--embeddings", root / "e.sqlite"]
    rows = [json.loads(line) for line in run("predict", data, *common, "--format", "jsonl").stdout.splitlines()]
    assert all(0 <= r["ood"] <= 2 and 0 <= r["ood_rank"] <= 1 for r in rows)
    # The tiny encoder's 8 dimensions lie almost wholly on the recorded axes, so every score is
    # rounding noise (about 1e-6) and its order differs between CPUs: record the lowest score
    # the users get as the only validation score, so the rule must abstain on every user above it
    distinct = sorted({r["ood"] for r in rows})
    assert len(distinct) >= 2
    loaded = load_model(model)
    loaded.ood = {**record, "validation": [distinct[0]]}
    save_model(loaded, root / "strict.keras")
    common[1] = root / "strict.keras"
    strict = run("predict", data, *common, "--format", "jsonl", "--decide", "balanced,ood=0.01")
    assert strict.exit_code == 0, strict.output
    decided = [json.loads(line) for line in strict.stdout.splitlines()]
    cut = ood.Scorer(loaded.ood).threshold(0.01)
    assert cut == pytest.approx(distinct[0])
    for r, d in zip(rows, decided):
        assert d["decide"] == "balanced,ood=0.01" and d["ood"] == r["ood"]
        above = r["ood"] > cut
        assert (d["gender"]["label"] == "unknown") == above
        assert d["gender"]["probabilities"] == r["gender"]["probabilities"]  # only the label changes
    assert any(d["gender"]["label"] == "unknown" for d in decided)
    assert not all(d["gender"]["label"] == "unknown" for d in decided)
    csv = run("predict", data, *common, "--format", "csv").stdout.splitlines()
    header = csv[0].split(",")
    assert float(csv[1].split(",")[header.index("ood")]) == pytest.approx(rows[0]["ood"])
