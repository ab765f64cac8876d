"""Scoring probability outputs: the measures by hand, the readers, and ``profiler score``."""
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli.main import main
from core.labels import LABELS
from profiler import probabilities
from profiler.probabilities import recall_at_precision, trait_probability_scores

TRUTH = "u1:::female:::center:::student\nu2:::male:::north:::arts\nu3:::female:::west:::student\nu4:::male:::center:::social\n"


def vector(trait, top, p=0.7):
    """``p`` on ``top``, the rest spread evenly over the other classes."""
    k = len(LABELS[trait])
    return {c: (p if c == top else (1 - p) / (k - 1)) for c in LABELS[trait]}


def record(user, gender, location, occupation, p=0.7):
    return {"user_id": user, "path": f"/x/{user}", "files": 3, "images_used": 3, "filled": False,
            "error": None, "decide": "argmax", **{
                t: {"label": v, "probabilities": vector(t, v, p)}
                for t, v in (("gender", gender), ("location", location), ("occupation", occupation))},
            "skipped": []}


GOOD = [record("u1", "female", "center", "student"), record("u2", "female", "north", "arts"),
        record("u3", "female", "west", "student", 0.9), record("u4", "male", "center", "social")]


def write_json(path, records):
    path.write_text("[\n  " + ",\n  ".join(json.dumps(r) for r in records) + "\n]\n")
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_recall_at_precision_by_hand():
    positive = np.array([1, 1, 0, 1, 0], bool)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1])
    # thresholds 0.9: P 1, R 1/3; 0.8: P 1, R 2/3; 0.7: P 2/3; 0.6: P 3/4, R 1; 0.1: P 3/5
    assert recall_at_precision(positive, scores, 0.9) == (pytest.approx(2 / 3), 0.8)
    assert recall_at_precision(positive, scores, 0.7) == (1.0, 0.6)
    assert recall_at_precision(np.zeros(3, bool), scores[:3], 0.5) == (0.0, None)
    assert recall_at_precision(np.array([0, 0, 1], bool), np.array([0.9, 0.8, 0.1]), 0.5) == (0.0, None)


def test_trait_scores_by_hand():
    probs = np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    y = np.array([0, 0, 1, 1])
    out = trait_probability_scores(probs, y, ("female", "male"), precision=0.9)
    # class female: positives score 0.8, 0.4; negatives 0.3, 0.6 -> pairs won 1+1+0+1 of 4
    assert out["per_class"]["female"]["roc_auc"] == pytest.approx(0.75)
    assert out["roc_auc"] == pytest.approx(0.75)
    # average precision of female: ranks 0.8 (hit, P 1), 0.6 (miss), 0.4 (hit, P 2/3) -> (1 + 2/3) / 2
    assert out["per_class"]["female"]["pr_auc"] == pytest.approx(5 / 6)
    assert out["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.4, 0.7, 0.4])))
    assert out["brier"] == pytest.approx(np.mean([2 * 0.2 ** 2, 2 * 0.6 ** 2, 2 * 0.3 ** 2, 2 * 0.6 ** 2]))
    assert out["per_class"]["female"]["recall_at_precision"] == 0.5
    assert out["per_class"]["female"]["threshold"] == 0.8
    assert out["n_scored"] == 4 and out["per_class"]["male"]["support"] == 2


def test_a_class_absent_from_the_truth_has_no_auc():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    out = trait_probability_scores(probs, np.array([0, 1]), ("a", "b", "c"), precision=0.9)
    assert out["per_class"]["c"]["roc_auc"] is None and out["per_class"]["c"]["pr_auc"] is None
    assert out["roc_auc"] == 1.0 and out["pr_auc"] == 1.0


def test_json_jsonl_and_csv_read_alike(tmp_path):
    truth = pd.read_csv(pd.io.common.StringIO(TRUTH.replace(":::", ",")), header=None,
                        names=["user_id", "gender", "location", "occupation"]).set_index("user_id")
    write_json(tmp_path / "p.json", GOOD)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GOOD))
    flat = [{"user_id": r["user_id"], "error": "", **{t: r[t]["label"] for t in LABELS},
             **{f"{t}:{c}": v for t in LABELS for c, v in r[t]["probabilities"].items()}} for r in GOOD]
    pd.DataFrame(flat).to_csv(tmp_path / "p.csv", index=False)
    loaded = [probabilities.load_probabilities(tmp_path / f"p.{ext}", truth) for ext in ("json", "jsonl", "csv")]
    for sub in loaded:
        assert sub.valid, sub.problems
        assert sub.predictions.loc["u2", "gender"] == "female"
        np.testing.assert_allclose(sub.probabilities["gender"].loc["u3"].to_numpy(), [0.9, 0.1])
        assert list(sub.probabilities["occupation"].columns) == list(LABELS["occupation"])
    assert all(probabilities.sniff(tmp_path / f"p.{ext}") for ext in ("json", "jsonl", "csv"))
    (tmp_path / "labels.csv").write_text("user_id,gender,location,occupation\nu1,female,center,student\n")
    assert not probabilities.sniff(tmp_path / "labels.csv")


def test_score_cli_adds_probability_tables(tmp_path):
    (tmp_path / "truth.txt").write_text(TRUTH)
    write_json(tmp_path / "set.json", GOOD)
    (tmp_path / "labels.txt").write_text("".join(
        f"{r['user_id']}:::{r['gender']['label']}:::{r['location']['label']}:::{r['occupation']['label']}\n"
        for r in GOOD))
    result = run("score", "-t", tmp_path / "truth.txt", tmp_path / "set.json", tmp_path / "labels.txt",
                 "--format", "json", "--at-precision", "0.6")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)["results"]
    assert payload["set"]["traits"] == payload["labels"]["traits"]  # the label tables are unchanged
    assert "probabilities" not in payload["labels"]
    gender = payload["set"]["probabilities"]["gender"]
    # p(true gender): 0.7, 0.3 (u2 said female), 0.9, 0.7
    assert gender["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.9, 0.7])))
    assert gender["at_precision"] == 0.6 and gender["n_scored"] == 4
    # female scores 0.7, 0.7, 0.9 (u1, u2, u3) and 0.3 (u4): u2 is male -> at 0.7 precision 2/3, recall 1
    assert gender["per_class"]["female"]["recall_at_precision"] == 1.0
    assert gender["per_class"]["female"]["threshold"] == 0.7
    markdown = run("score", "-t", tmp_path / "truth.txt", tmp_path / "set.json")
    assert markdown.exit_code == 0, markdown.output
    assert "### Probabilities. Gender\n" in markdown.stdout
    assert "### Probabilities. Occupation: per class, one against the rest (recall at precision 0.9)" in markdown.stdout
    assert markdown.stdout.index("### Table 5.") < markdown.stdout.index("### Probabilities. Gender")


def test_an_unprofiled_user_counts_as_missing(tmp_path):
    (tmp_path / "truth.txt").write_text(TRUTH)
    failed = dict(GOOD[3], error="no usable image", gender=None, location=None, occupation=None)
    write_json(tmp_path / "set.json", GOOD[:3] + [failed])
    result = run("score", "-t", tmp_path / "truth.txt", tmp_path / "set.json", "--format", "json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)["results"]["set"]
    assert payload["probabilities"]["gender"]["n_scored"] == 3
    assert payload["n_missing"] == 1
    assert "1 of 4 truth users have no probabilities and count as wrong" in result.stderr


@pytest.mark.parametrize("change, message", [
    (lambda r: r["gender"]["probabilities"].update(female=0.9), "3: error: gender: the probabilities sum to 1.2, not 1"),
    (lambda r: r["gender"]["probabilities"].update(robot=0.0), "3: error: gender: unknown class 'robot' (expected female, male)"),
    (lambda r: r["location"]["probabilities"].pop("west"), "3: error: location: no probability for west"),
    (lambda r: r["gender"]["probabilities"].update(female=float("nan")), "3: error: gender: the probability of female is nan, not a number in [0, 1]"),
    (lambda r: r["gender"]["probabilities"].update(female="x"), "3: error: gender: the probability of female is not a number: 'x'"),
    (lambda r: r["gender"].update(label="robot"), "3: error: unknown gender label 'robot'"),
    (lambda r: r.update(occupation="student"), "3: error: occupation: expected {\"label\": ..., \"probabilities\""),
    (lambda r: r.update(user_id="u9"), "3: error: user 'u9' is not in the truth file"),
    (lambda r: r.update(user_id="u1"), "3: error: duplicate user 'u1' (first seen on line 2)"),
])
def test_bad_probability_rows_are_refused_with_their_line(tmp_path, change, message):
    (tmp_path / "truth.txt").write_text(TRUTH)
    rows = json.loads(json.dumps(GOOD))
    change(rows[1])
    write_json(tmp_path / "set.json", rows)
    before = b"old scores"
    (tmp_path / "out.md").write_bytes(before)
    result = run("score", "-t", tmp_path / "truth.txt", tmp_path / "set.json", "-o", tmp_path / "out.md")
    assert result.exit_code == 1
    assert f"{tmp_path / 'set.json'}:{message}" in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert (tmp_path / "out.md").read_bytes() == before


def test_malformed_json_names_the_line(tmp_path):
    (tmp_path / "truth.txt").write_text(TRUTH)
    text = write_json(tmp_path / "set.json", GOOD).read_text()
    (tmp_path / "set.json").write_text(text.replace('"u3"', "u3", 1))
    result = run("score", "-t", tmp_path / "truth.txt", tmp_path / "set.json")
    assert result.exit_code == 1
    assert f"{tmp_path / 'set.json'}:4: malformed JSON: Expecting value" in result.stderr
    (tmp_path / "set.json").write_text(text.rstrip().rstrip("]"))
    result = run("score", "-t", tmp_path / "truth.txt", tmp_path / "set.json")
    assert result.exit_code == 1 and "malformed JSON: the array is not closed" in result.stderr


def test_a_pipe_is_refused_not_waited_on(tmp_path):
    import os

    (tmp_path / "truth.txt").write_text(TRUTH)
    os.mkfifo(tmp_path / "pipe")
    result = run("score", "-t", tmp_path / "truth.txt", tmp_path / "pipe")
    assert result.exit_code == 1 and f"{tmp_path / 'pipe'}: error: not a regular file" in result.stderr
