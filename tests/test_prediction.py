import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli.main import main
from profiler.models import Cnn3dProfiler, save_model
from profiler.prediction import predict_users
from tests.helpers import make_dataset, truncated_jpeg


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data = make_dataset(root / "d", {"a": 11, "b": 3, "c": 14, "d": 1})
    truncated_jpeg(data / "images" / "b" / "zz_broken.jpg")
    (data / "images" / "empty").mkdir()
    model = Cnn3dProfiler("model1", filters=(4, 4, 4, 4), dense=(8,), height=16, width=16)
    path = save_model(model, root / "m.keras")
    return root, data, path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_single_folder(setup):
    _, data, model = setup
    result = run("predict", data / "images" / "a", "--model", model, "-q")
    assert result.exit_code == 0, result.output
    [user] = json.loads(result.stdout)
    assert user["user_id"] == "a" and user["images_used"] == 11 and user["filled"] is False
    assert user["error"] is None and user["skipped"] == []
    for trait, n in (("gender", 2), ("location", 6), ("occupation", 8)):
        probs = user[trait]["probabilities"]
        assert len(probs) == n and sum(probs.values()) == pytest.approx(1, abs=1e-5)
        assert user[trait]["label"] == max(probs, key=probs.get)


def test_dataset_with_few_broken_and_empty_users_exits_3(setup):
    _, data, model = setup
    result = run("predict", data, "--model", model, "-q", "--format", "jsonl")
    assert result.exit_code == 3
    users = {u["user_id"]: u for u in map(json.loads, result.stdout.splitlines())}
    assert sorted(users) == ["a", "b", "c", "d", "empty"]
    assert users["b"]["images_used"] == 3 and users["b"]["filled"] is True
    assert users["b"]["skipped"][0]["file"].endswith("zz_broken.jpg")
    assert users["b"]["skipped"][0]["reason"].startswith("corrupt image: truncated file")
    assert users["c"]["images_used"] == 11 and users["c"]["files"] == 14
    assert users["empty"]["error"] == "no image files" and users["empty"]["gender"] is None
    assert "warning: empty: no image files; not profiled" in result.stderr
    assert "1 of 5 users could not be profiled" in result.stderr
    assert "1 image file skipped in all (the warnings above name them)" in result.stderr


def test_submission_output_scores(setup, tmp_path):
    _, data, model = setup
    out = tmp_path / "sub.txt"
    result = run("predict", data, "--model", model, "-q", "--format", "submission", "-o", out)
    assert result.exit_code == 3  # the empty folder
    assert len(out.read_text().splitlines()) == 4
    assert "zz_broken.jpg: corrupt image: truncated file" in result.stderr  # named in every format
    scored = run("score", "--truth", data / "truth.txt", out, "--ignore-extra")
    assert scored.exit_code == 0, scored.output
    assert "Table 1. Gender" in scored.stdout


def test_same_results_whatever_the_batch_size(setup):
    _, data, model = setup
    one = predict_users([data], model, batch_size=1)
    many = predict_users([data], model, batch_size=64)
    pd.testing.assert_frame_equal(one, many)
    assert one.loc[one["user_id"] == "empty", "error"].item() == "no image files"
    probs = one.filter(like="location:").dropna().to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_package_level_api():
    import profiler

    assert profiler.predict_users is predict_users


def test_tta_is_seeded_and_per_user(setup):
    _, data, model = setup
    a = predict_users([data / "images" / "c", data / "images" / "a"], model, tta=4, seed=1)
    b = predict_users([data / "images" / "a"], model, tta=4, seed=1, batch_size=1)
    assert a[a["user_id"] == "a"].drop(columns="path").reset_index(drop=True).equals(
        b.drop(columns="path").reset_index(drop=True))


def test_csv_and_bad_model(setup, tmp_path):
    _, data, model = setup
    result = run("predict", data / "images" / "a", "--model", model, "--format", "csv", "-q")
    header = result.stdout.splitlines()[0].split(",")
    assert header[:12] == ["user_id", "path", "files", "images_used", "filled", "error", "decide", "ood",
                           "ood_rank", "gender", "location", "occupation"]
    assert result.stdout.splitlines()[1].split(",")[6] == "argmax"
    assert "gender:female" in header and "occupation:health" in header
    bad = tmp_path / "bad.keras"
    bad.write_text("x")
    result = run("predict", data / "images" / "a", "--model", bad)
    assert result.exit_code == 1 and "bad.keras: not a .keras model file" in result.output
    copy = tmp_path / "copy.keras"  # the model file as --output: refused, the model kept
    copy.write_bytes(Path(model).read_bytes())
    result = run("predict", data / "images" / "a", "--model", copy, "-o", copy, "-q")
    assert result.exit_code == 2
    assert f"--output {copy} is the model file, which this command reads; choose another file" in result.output
    assert copy.read_bytes() == Path(model).read_bytes()


@pytest.mark.slow
def test_end_to_end_demo(tmp_path):
    """Sample data -> train the three models -> predict -> score, as 'make demo' does, but tiny."""
    result = run("demo", "--out-dir", tmp_path / "results", "--data", tmp_path / "data", "--runs",
                 tmp_path / "runs", "--users", 30, "--epochs", 1, "--size", 16, "-q")
    assert result.exit_code == 0, result.output
    assert "Bayes rule (ceiling)" in result.stdout and "3D CNN Model 2" in result.stdout
    assert "Set model (frozen encoder + head)" in result.stdout
    assert "Item oracle + logistic regression" in result.stdout
    out = tmp_path / "results"
    for name in ("summary.md", "tables.md", "tables.csv", "scores.json", "versions.json",
                 "generator.json", "training_curves_model1.png", "training_curves_set.png",
                 "submissions/model2.txt", "submissions/set.txt", "demo_timings.json"):
        assert (out / name).is_file(), name
    tables = (out / "tables.md").read_text()
    assert "quoted from the paper (MEX-A3T 2019)" in tables
    scores = json.loads((out / "scores.json").read_text())["results"]
    assert scores["Bayes rule (ceiling)"]["traits"]["gender"]["F"] > scores["majority class"]["traits"]["gender"]["F"]
    evaluated = run("evaluate", tmp_path / "runs" / "model1", tmp_path / "data" / "test", "-q")
    assert evaluated.exit_code == 0, evaluated.output
    assert (tmp_path / "runs" / "model1" / "evaluation" / "report.md").is_file()
    summary = (out / "summary.md").read_text()
    assert "As fractions of the Bayes rule's" in summary and "users/s end to end" in summary
    calibration = json.loads((out / "calibration.json").read_text())
    assert set(calibration) == {"Set model (frozen encoder + head)", "3D CNN Model 1", "3D CNN Model 2"}
    assert calibration["3D CNN Model 1"]["gender"]["users"] > 0 and "Calibration of the probabilities" in summary
    assert (out / "reliability_3D_CNN_Model_1.png").is_file()
    unusual = json.loads((out / "ood.json").read_text())
    assert set(unusual) == set(calibration)
    for report in unusual.values():  # 50 users of each kind against the test users
        assert report["unusual_users"] == {"solid": 50, "noise": 50, "photo": 50} and 0 <= report["roc_auc"] <= 1
    assert "Out of distribution" in summary and "classes at precision 0.9" in summary
    probabilities = json.loads((out / "probabilities.json").read_text())
    assert probabilities["3D CNN Model 2"]["occupation"]["n_scored"] > 0
    assert "### Probabilities. Location: per class" in (out / "probabilities.md").read_text()
    timings = json.loads((out / "demo_timings.json").read_text())
    again = run("demo", "--out-dir", tmp_path / "results", "--data", tmp_path / "data", "--runs",
                tmp_path / "runs", "--users", 30, "--epochs", 1, "--size", 16, "-q")
    assert again.exit_code == 0, again.output
    timings2 = json.loads((out / "demo_timings.json").read_text())
    assert timings["embed_train_images_new"] > 0 and timings2["embed_train_images_new"] == 0
    assert timings2["predict_set_images_new"] == 0 and "train_set_s" not in timings2
