import json
from pathlib import Path

from click.testing import CliRunner

from cli.main import main

DATA = Path(__file__).parent / "data"
TRUTH = "u1:::mujer:::centro:::estudiante\r\nu2:::male:::north:::arts\r\nu3:::female:::west:::student\r\nu4:::male:::center:::social\r\n"
SUB_TXT = "\ufeffu1:::female:::center:::student\nu2:::male:::center:::arts\nu3:::male:::west:::student\n"
SUB_CSV = ("user_id,gender,location,occupation\nu1,female,center,social\nu2,female,north,arts\n"
           "u3,female,west,student\nu4,male,center,social\n")


def setup(tmp_path):
    (tmp_path / "truth.txt").write_text(TRUTH, newline="")
    (tmp_path / "m1.txt").write_text(SUB_TXT)
    (tmp_path / "m2.csv").write_text(SUB_CSV)
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_markdown_matches_the_stored_table(tmp_path):
    d = setup(tmp_path)
    result = run("score", "--truth", d / "truth.txt", d / "m1.txt", d / "m2.csv", "--baselines")
    assert result.exit_code == 0, result.output
    expected = (DATA / "score_expected.md").read_text()
    assert result.stdout == expected
    assert "m1.txt: warning: 1 of 4 truth users have no prediction and count as wrong: u4" in result.stderr


def test_with_paper_rows_are_labelled(tmp_path):
    d = setup(tmp_path)
    result = run("score", "-t", d, d / "m2.csv", "--with-paper", "--format", "csv")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "table,system,source,F,Acc,P,R,center,southeast,northwest,north,northeast,west,others,arts,student,social,sciences,sports,administrative,health"
    assert ("Table 1. Gender,3D CNN Model 2,quoted from the paper (MEX-A3T 2019),"
            "0.5227,0.5227,0.5230,0.5227") in result.stdout
    assert lines[1].startswith("Table 1. Gender,m2,this run,0.7333,0.7500,0.8333,0.7500")


def test_json_output_file_and_plots(tmp_path):
    d = setup(tmp_path)
    out = d / "scores.json"
    result = run("score", "-t", d / "truth.txt", d / "m2.csv", "--format", "json", "-o", out,
                 "--plots", d / "plots", "--bootstrap", 50, "--name", "model two")
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    gender = payload["results"]["model two"]["traits"]["gender"]
    assert gender["Acc"] == 0.75 and len(gender["ci95"]["F"]) == 2
    assert sorted(p.name for p in (d / "plots").iterdir()) == [
        "confusion_model_two_gender.png", "confusion_model_two_location.png",
        "confusion_model_two_occupation.png"]


def test_latex(tmp_path):
    d = setup(tmp_path)
    result = run("score", "-t", d / "truth.txt", d / "m2.csv", "--format", "latex")
    assert result.exit_code == 0 and "\\toprule" in result.stdout and "% Table 5." in result.stdout


def test_invalid_submission_reports_every_problem_and_exits_1(tmp_path):
    d = setup(tmp_path)
    bad = d / "bad.txt"
    bad.write_text("u1:::femal:::center:::student\nu1:::male:::north:::arts\nzz:::male:::north:::arts\nu2:::male\n")
    out = d / "keep.md"
    out.write_text("good output")
    result = run("score", "-t", d / "truth.txt", bad, d / "m2.csv", "-o", out)
    assert result.exit_code == 1
    err = result.stderr
    assert f"{bad}:1: error: unknown gender label 'femal' (did you mean 'female'?)" in err
    assert f"{bad}:2: error: duplicate user 'u1' (first seen on line 1)" in err
    assert f"{bad}:3: error: user 'zz' is not in the truth file (use --ignore-extra to ignore it)" in err
    assert f"{bad}:4: error: malformed line" in err
    assert f"Error: 1 invalid submission(s), nothing scored: {bad}" in err
    assert out.read_text() == "good output"


def test_ignore_extra(tmp_path):
    d = setup(tmp_path)
    extra = d / "extra.txt"
    extra.write_text(SUB_CSV.replace("u4,male", "zz,male"))
    assert run("score", "-t", d / "truth.txt", extra).exit_code == 1
    result = run("score", "-t", d / "truth.txt", extra, "--ignore-extra")
    assert result.exit_code == 0 and "'zz' is not in the truth file; ignored" in result.stderr


def test_usage_errors(tmp_path):
    d = setup(tmp_path)
    assert run("score", "-t", d / "truth.txt").exit_code == 2
    result = run("score", "-t", d / "truth.txt", d / "m2.csv", "--format", "markdwn")
    assert result.exit_code == 2 and "Did you mean 'markdown'?" in result.stderr
    empty = d / "empty"
    empty.mkdir()
    result = run("score", "-t", empty, d / "m2.csv")
    assert result.exit_code == 1 and "no truth.txt, truth.csv or truth.jsonl" in result.stderr


def test_an_output_that_is_an_input_is_refused_and_kept(tmp_path):
    d = setup(tmp_path)
    for target, what in ((d / "m1.txt", "a submission"), (d / "truth.txt", "the truth file")):
        before = target.read_bytes()
        result = run("score", "-t", d / "truth.txt", d / "m1.txt", d / "m2.csv", "-o", target)
        assert result.exit_code == 2, result.output
        assert f"--output {target} is {what}, which this command reads; choose another file" in result.stderr
        assert target.read_bytes() == before


def test_a_device_or_endless_input_is_refused(tmp_path):
    from click.testing import CliRunner

    from cli.main import main

    truth = tmp_path / "truth.txt"
    truth.write_text("u1:::female:::center:::student\n")
    result = CliRunner().invoke(main, ["score", "--truth", str(truth), "/dev/zero"])
    assert result.exit_code == 1 and "/dev/zero: error: not a regular file" in result.output
    assert "Traceback" not in result.output
