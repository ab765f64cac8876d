import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import classification_report

from core.labels import TRAITS
from profiler.evaluation import (MISSING, _metrics_from_counts, bootstrap_scores, encode,
                                 load_submission, majority_baseline, score, stratified_baseline,
                                 trait_scores)


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", *TRAITS]).set_index("user_id")


# gender truth F F F M, predicted F M F M:
#   female: P = 2/2, R = 2/3, F1 = 0.8;  male: P = 1/2, R = 1/1, F1 = 2/3
G_TRUE = encode(["female", "female", "female", "male"], "gender")
G_PRED = encode(["female", "male", "female", "male"], "gender")


@pytest.mark.parametrize("average,f_measure,expected", [
    ("macro", "mean", dict(F=(0.8 + 2 / 3) / 2, Acc=0.75, P=0.75, R=5 / 6)),
    ("macro", "pan", dict(F=2 * 0.75 * (5 / 6) / (0.75 + 5 / 6), Acc=0.75, P=0.75, R=5 / 6)),
    ("weighted", "mean", dict(F=(3 * 0.8 + 2 / 3) / 4, Acc=0.75, P=(3 + 0.5) / 4, R=0.75)),
    ("weighted", "pan", dict(F=2 * 0.875 * 0.75 / (0.875 + 0.75), Acc=0.75, P=0.875, R=0.75)),
])
def test_hand_computed_gender(average, f_measure, expected):
    got = trait_scores(G_TRUE, G_PRED, "gender", average=average, f_measure=f_measure)
    assert {m: got[m] for m in expected} == pytest.approx(expected)


def test_per_class_and_confusion():
    got = trait_scores(G_TRUE, G_PRED, "gender")
    assert got["per_class"]["female"] == pytest.approx(
        {"acc": 2 / 3, "precision": 1.0, "f1": 0.8, "support": 3, "predicted": 2})
    assert got["per_class"]["male"] == pytest.approx(
        {"acc": 1.0, "precision": 0.5, "f1": 2 / 3, "support": 1, "predicted": 2})
    assert got["confusion"] == {"labels": ["female", "male"], "matrix": [[2, 1], [0, 1]],
                                "missing": [0, 0]}


def test_classes_never_predicted_and_absent_from_truth():
    # truth center center north north; predicted center west north center
    # center P 1/2 R 1/2 F1 1/2; north P 1 R 1/2 F1 2/3; west (predicted, not in truth) all 0;
    # the three other regions occur nowhere and are left out of the averages.
    y_true = encode(["center", "center", "north", "north"], "location")
    y_pred = encode(["center", "west", "north", "center"], "location")
    macro = trait_scores(y_true, y_pred, "location")
    assert [macro[m] for m in "F Acc P R".split()] == pytest.approx(
        [(0.5 + 2 / 3) / 3, 0.5, 1.5 / 3, 1 / 3])
    weighted = trait_scores(y_true, y_pred, "location", average="weighted")
    assert [weighted[m] for m in "F Acc P R".split()] == pytest.approx(
        [(1 + 4 / 3) / 4, 0.5, 0.75, 0.5])
    assert macro["per_class"]["west"] == {"acc": 0.0, "precision": 0.0, "f1": 0.0,
                                          "support": 0, "predicted": 1}
    assert macro["per_class"]["southeast"]["support"] == 0


def test_missing_users_count_as_wrong():
    truth = frame([("u1", "female", "center", "student"), ("u2", "female", "north", "arts"),
                   ("u3", "female", "center", "student"), ("u4", "male", "west", "health")])
    preds = frame([("u1", "female", "center", "student"), ("u2", "male", "north", "arts"),
                   ("u3", "female", "center", "others")])
    result = score(truth, preds)
    assert result["n_missing"] == 1 and result["missing_users"] == ["u4"]
    gender = result["traits"]["gender"]
    # female P 1 R 2/3 F1 0.8; male P 0 (u2 wrong) R 0 F1 0 (u4 missing)
    assert [gender[m] for m in "F Acc P R".split()] == pytest.approx([0.4, 0.5, 0.5, 1 / 3])
    assert gender["confusion"]["missing"] == [0, 1]


def test_options_are_checked():
    with pytest.raises(ValueError, match="average must be one of"):
        trait_scores(G_TRUE, G_PRED, "gender", average="micro")


labels_strategy = st.lists(st.tuples(st.integers(0, 5), st.integers(-1, 5)), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(labels_strategy)
def test_matches_sklearn_classification_report(pairs):
    y_true = np.array([t for t, _ in pairs])
    y_pred = np.array([p for _, p in pairs])
    present = sorted(set(y_true) | (set(y_pred) - {MISSING}))
    report = classification_report(y_true, y_pred, labels=present, output_dict=True, zero_division=0)
    for average, key in (("macro", "macro avg"), ("weighted", "weighted avg")):
        got = trait_scores(y_true, y_pred, "location", average=average)
        assert got["P"] == pytest.approx(report[key]["precision"])
        assert got["R"] == pytest.approx(report[key]["recall"])
        assert got["F"] == pytest.approx(report[key]["f1-score"])
    assert got["Acc"] == pytest.approx(np.mean(y_true == y_pred))


@settings(max_examples=60, deadline=None)
@given(labels_strategy, st.sampled_from(["macro", "weighted"]), st.sampled_from(["mean", "pan"]))
def test_bootstrap_counts_agree_with_sklearn(pairs, average, f_measure):
    y_true = np.array([t for t, _ in pairs])
    y_pred = np.array([p for _, p in pairs])
    cm = np.zeros((1, 6, 7), np.int64)
    for t, p in pairs:
        cm[0, t, 6 if p == MISSING else p] += 1
    fast = _metrics_from_counts(cm, 6, average, f_measure)
    slow = trait_scores(y_true, y_pred, "location", average=average, f_measure=f_measure)
    for metric in ("F", "Acc", "P", "R"):
        assert fast[metric][0] == pytest.approx(slow[metric])


def test_bootstrap_intervals_are_seeded_and_bracket_the_score():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, 300)
    y_pred = np.where(rng.random(300) < 0.5, y_true, rng.integers(0, 6, 300))
    a = bootstrap_scores(y_true, y_pred, 6, rounds=200, seed=3)
    b = bootstrap_scores(y_true, y_pred, 6, rounds=200, seed=3)
    assert np.array_equal(a["F"], b["F"]) and a["F"].shape == (200,)
    point = trait_scores(y_true, y_pred, "location")["F"]
    assert np.percentile(a["F"], 2.5) < point < np.percentile(a["F"], 97.5)


def test_baselines():
    truth = frame([("a", "male", "north", "arts"), ("b", "male", "west", "arts"),
                   ("c", "female", "west", "health")])
    majority = majority_baseline(truth)
    assert majority.values.tolist() == [["male", "west", "arts"]] * 3
    random = stratified_baseline(truth, seed=1)
    assert random.equals(stratified_baseline(truth, seed=1))
    assert set(random["location"]) <= {"north", "west"}


def test_submission_validation_reports_everything(tmp_path):
    truth = frame([("u1", "female", "center", "student"), ("u2", "male", "north", "arts"),
                   ("u3", "male", "north", "arts")])
    path = tmp_path / "sub.txt"
    path.write_text("u1:::female:::centre:::student\nu1:::male:::north:::arts\n"
                    "stranger:::male:::north:::arts\nu2:::male:::nort:::arts\n")
    sub = load_submission(path, truth)
    assert [(p.line, p.severity, p.message) for p in sub.problems] == [
        (2, "error", "duplicate user 'u1' (first seen on line 1)"),
        (4, "error", "unknown location label 'nort' (did you mean 'north'?); expected one of: "
                     "center, southeast, northwest, north, northeast, west"),
        (3, "error", "user 'stranger' is not in the truth file (use --ignore-extra to ignore it)"),
        (None, "warning", "2 of 3 truth users have no prediction and count as wrong: u2, u3"),
    ]
    assert not sub.valid
    lenient = load_submission(path, truth, ignore_extra=True)
    assert [p.severity for p in lenient.problems].count("warning") == 2


def test_empty_submission_is_invalid(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    sub = load_submission(path, frame([("u1", "female", "center", "student")]))
    assert not sub.valid and [p.message for p in sub.problems] == ["file is empty"]
