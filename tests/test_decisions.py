"""Decision rules (predict --decide): hand-computed thresholds, abstention, the record in the model file,
and scoring of abstentions."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from core.errors import ConfigError
from profiler.decisions import Decider, check_record, macro_exponent, parse_decide, record, thresholds
from tests.helpers import make_dataset, train_tiny_set

LABELS = {"gender": ["female", "male"],
          "location": ["center", "southeast", "northwest", "north", "northeast", "west"],
          "occupation": ["others", "arts", "student", "social", "sciences", "sports", "administrative", "health"]}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_parse_decide():
    assert parse_decide("argmax") == ("argmax", None) and parse_decide("balanced") == ("balanced", None)
    assert parse_decide(" macro") == ("macro", None)
    assert parse_decide("precision=0.9") == ("precision", 0.9) and parse_decide(" precision=.75 ") == ("precision", 0.75)
    for bad in ("precision=1", "precision=0", "precision=x", "max", "precision=1.5"):
        with pytest.raises(ConfigError, match=r"--decide must be argmax, balanced, macro or precision=P with 0 < P < 1"):
            parse_decide(bad)


def test_thresholds_by_hand():
    # class 0 scores 0.9 0.8 0.7 0.6 with truth 0 0 1 0: precision above 0.9: 1, 0.8: 1, 0.7: 2/3, 0.6: 3/4
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    truth = np.array([0, 0, 1, 0])
    assert thresholds(p, truth, 0.9)[0] == pytest.approx(0.8)
    assert thresholds(p, truth, 0.7)[0] == pytest.approx(0.6)
    # class 1 scores 0.1 0.2 0.3 0.4: over 0.4 none is class 1, over 0.3 one of two: never 0.9
    assert thresholds(p, truth, 0.9)[1] == np.inf
    assert thresholds(p, truth, 0.5)[1] == pytest.approx(0.3)


def test_the_three_rules():
    rng = np.random.default_rng(0)
    val = {t: rng.dirichlet(np.ones(len(v)), 40) for t, v in LABELS.items()}
    truth = {t: v.argmax(axis=1) for t, v in val.items()}  # the validation users' argmax is right
    truth["gender"][:4] = 1 - truth["gender"][:4]
    train = {"gender": np.array([0] * 90 + [1] * 10), "location": np.arange(60) % 6, "occupation": np.arange(80) % 8}
    info = {"labels": LABELS, "decisions": record(val, truth, train, LABELS)}
    check_record(info["decisions"], LABELS)
    p = np.array([0.6, 0.4])
    assert Decider("argmax", info).label("gender", p) == "female"
    # priors ~ 91/102 female, 11/102 male: 0.4 / 0.108 beats 0.6 / 0.892
    assert Decider("balanced", info).label("gender", p) == "male"
    strict = Decider("precision=0.99", info)
    cuts = strict.describe()["thresholds"]["gender"]
    assert set(cuts) == {"female", "male"}
    low = np.array([0.5, 0.5])
    assert strict.label("gender", low) == "unknown"
    assert strict.label("gender", np.array([1.0, 0.0])) == ("unknown" if cuts["female"] is None else "female")


def test_macro_exponent_by_hand():
    """Two classes with shares 0.8 / 0.2: p / share^a names the rare class where p1 / p0 > 4^-a.
    Validation users with p1 / p0 of 0.11, 0.25, 0.89 (truly common) and 1.22, 2.33 (truly rare):
    only a = 0 (argmax, cut 1) names exactly the rare ones; at a = 0.1 (cut 0.87) the 0.89 user
    is named rare too. Move that user to 0.43 and every a up to 0.6 (cut 0.435) is perfect: ties
    keep the larger a. A head that under-states the rare class (its users at 0.43-0.67, the
    common ones below 0.18) needs a cut under 0.43: a = 0.7 to 1, so 1 (balanced)."""
    shares = np.array([0.8, 0.2])
    truth = np.array([0, 0, 0, 1, 1])

    def probabilities(p1):
        p1 = np.array(p1)
        return np.stack([1 - p1, p1], axis=1)

    assert macro_exponent(probabilities([0.1, 0.2, 0.47, 0.55, 0.7]), truth, shares, "gender") == 0.0
    assert macro_exponent(probabilities([0.1, 0.2, 0.3, 0.55, 0.7]), truth, shares, "gender") == 0.6
    assert macro_exponent(probabilities([0.05, 0.1, 0.15, 0.3, 0.35, 0.4]), np.array([0, 0, 0, 1, 1, 1]),
                          shares, "gender") == 1.0
    assert macro_exponent(np.zeros((0, 2)), np.zeros(0, np.int64), shares, "gender") == 1.0  # no users: balanced


def test_the_macro_rule_reads_its_exponent_from_the_validation_record():
    val = {t: np.full((4, len(v)), 1 / len(v)) for t, v in LABELS.items()}
    val["gender"] = np.array([[0.9, 0.1], [0.52, 0.48], [0.6, 0.4], [0.4, 0.6]])
    truth = {t: np.zeros(4, int) for t in LABELS}
    truth["gender"] = np.array([0, 0, 0, 1])  # only argmax's cut (p1 / p0 > 1) separates 0.92 from 1.5
    train = {"gender": np.array([0] * 80 + [1] * 20), "location": np.arange(60) % 6, "occupation": np.arange(80) % 8}
    info = {"labels": LABELS, "decisions": record(val, truth, train, LABELS, class_weight="balanced", shifted=True)}
    rule = Decider(None, info)
    assert rule.text == "macro" and rule.describe()["exponents"]["gender"] == 0.0  # argmax is right on all four
    # share of male 21/102: 0.3 / 0.206 beats 0.7 / 0.794 under balanced, not under a = 0
    assert rule.label("gender", np.array([0.7, 0.3])) == "female"
    assert Decider("balanced", info).label("gender", np.array([0.7, 0.3])) == "male"


def test_a_class_weighted_model_is_already_balanced():
    """Trained with balanced class weights, the model's outputs are prior-corrected: 'balanced' is
    its own argmax and 'argmax' puts the priors back."""
    val = {t: np.full((3, len(v)), 1 / len(v)) for t, v in LABELS.items()}
    truth = {t: np.zeros(3, int) for t in LABELS}
    train = {"gender": np.array([0] * 90 + [1] * 10), "location": np.arange(60) % 6, "occupation": np.arange(80) % 8}
    weighted = {"labels": LABELS, "decisions": record(val, truth, train, LABELS, class_weight="balanced")}
    plain = {"labels": LABELS, "decisions": record(val, truth, train, LABELS)}
    p = np.array([0.4, 0.6])
    assert Decider("argmax", weighted).label("gender", p) == "female"  # 0.4 x 0.89 > 0.6 x 0.11
    assert Decider("balanced", weighted).label("gender", p) == "male"
    assert Decider("argmax", plain).label("gender", p) == "male"
    assert Decider(None, weighted).text == "macro" and Decider(None, {"labels": LABELS}).text == "argmax"
    # today's models: the outputs are shifted back to the real shares, so the rules read them plainly
    shifted = {"labels": LABELS, "decisions": record(val, truth, train, LABELS, class_weight="balanced",
                                                     shifted=True)}
    assert Decider("argmax", shifted).label("gender", p) == "male"
    assert Decider("balanced", shifted).label("gender", np.array([0.8, 0.2])) == "male"  # 0.2 / 0.11 > 0.8 / 0.89


def test_bad_records_are_refused():
    good = record({t: np.full((2, len(v)), 1 / len(v)) for t, v in LABELS.items()},
                  {t: np.zeros(2, int) for t in LABELS}, {t: np.zeros(3, int) for t in LABELS}, LABELS)
    check_record(good, LABELS)
    bad = json.loads(json.dumps(good))
    bad["validation"]["gender"]["labels"] = [0, 5]
    with pytest.raises(ValueError, match="gender validation record has labels outside 0..1"):
        check_record(bad, LABELS)
    bad = json.loads(json.dumps(good))
    bad["priors"]["occupation"] = [1.0]
    with pytest.raises(ValueError, match="the occupation priors must be 8 positive numbers"):
        check_record(bad, LABELS)
    bad = json.loads(json.dumps(good))
    bad["validation"]["location"]["labels"] = [0] * 300_000
    with pytest.raises(ValueError, match="up to 200,000 labels"):
        check_record(bad, LABELS)
    from profiler.models.set_head import SetProfiler

    with pytest.raises(ValueError, match="decisions must hold priors, validation and a class_weight"):
        SetProfiler(8, cap=4, decisions={"priors": {}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("decide")
    data = make_dataset(root / "data", {f"u{i:02d}": [1, 3, 11][i % 3] for i in range(24)})
    train_tiny_set(data, root / "run", root / "e.sqlite")
    train_tiny_set(data, root / "raw", root / "e.sqlite", "--set", "calibrate=false")
    return root, data


def test_predict_decides_and_score_counts_abstentions(trained):
    from profiler.models.io import load_model, model_info

    root, data = trained
    model = root / "run" / "model.keras"
    decisions = model_info(load_model(model))["decisions"]
    assert len(decisions["validation"]["gender"]["labels"]) >= 1 and len(decisions["priors"]["location"]) == 6
    assert decisions["class_weight"] == "balanced"  # the default training
    out = root / "strict.txt"
    result = run("predict", data, "--model", model, "--decide", "precision=0.999", "--format", "submission",
                 "-o", out, "-q", "--embeddings", root / "e.sqlite")
    assert result.exit_code == 0, result.output
    assert "--decide precision=0.999: thresholds from the validation split" in result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 24 and any(":::unknown" in line for line in lines)
    scored = run("score", "--truth", data, out, "--format", "json")
    assert scored.exit_code == 0, scored.output
    assert "strict: abstained ('unknown', counted wrong) on" in scored.stderr
    rows = run("predict", data, "--model", model, "--decide", "balanced", "--format", "jsonl", "-q",
               "--embeddings", root / "e.sqlite")
    users = [json.loads(line) for line in rows.stdout.splitlines()]
    assert rows.exit_code == 0 and {u["decide"] for u in users} == {"balanced"}
    assert all(u["gender"]["label"] in ("female", "male") for u in users)


def test_predict_output_dash_is_stdout(trained, monkeypatch):
    root, data = trained
    monkeypatch.chdir(root)
    result = run("predict", data, "--model", root / "run" / "model.keras", "--format", "submission", "-o", "-",
                 "-q", "--embeddings", root / "e.sqlite")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 24 and result.stdout.count(":::") == 3 * 24
    assert not (root / "-").exists() and "wrote" not in result.stderr


def test_a_model_without_a_record_can_only_argmax(trained):
    root, data = trained
    result = run("predict", data, "--model", root / "raw" / "model.keras", "--decide", "balanced", "-q",
                 "--embeddings", root / "e.sqlite")
    assert result.exit_code == 1 and "needs the validation record that training stores" in result.stderr
    result = run("predict", data, "--model", root / "raw" / "model.keras", "--decide", "precision=2", "-q")
    assert result.exit_code == 1 and "--decide must be argmax, balanced, macro or precision=P" in result.stderr
    assert "Traceback" not in result.output


def test_truth_files_may_not_abstain(tmp_path):
    from data_prep.truth import read_label_file

    path = tmp_path / "t.txt"
    path.write_text("a:::unknown:::center:::arts\n")
    assert read_label_file(path).problems and read_label_file(path).table.empty
    parsed = read_label_file(path, abstain=True)
    assert not parsed.problems and parsed.table.iloc[0]["gender"] == "unknown"
