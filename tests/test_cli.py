from click.testing import CliRunner

from cli.main import main
from profiler import __version__
from tests.helpers import make_dataset


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_and_version():
    result = run("--help")
    assert result.exit_code == 0 and "prepare" in result.output
    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"profiler, version {__version__}"


def test_prepare_writes_a_cache(tmp_path):
    root = make_dataset(tmp_path / "d", {"a": 2, "b": 3})
    result = run("prepare", root, "--out-dir", tmp_path / "c", "--size", 16, "-j", 1, "-q")
    assert result.exit_code == 0, result.output
    assert "prepared: 2 users, 5 images of 16x16 (0 files skipped" in result.output
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "images.npy", "meta.json", "skipped.csv", "users.csv"]


def test_prepare_bad_truth_is_a_clean_error(tmp_path):
    root = make_dataset(tmp_path / "d", {"a": 1})
    (root / "truth.txt").write_text("a:::femal:::center:::student\n")
    result = run("prepare", root, "--out-dir", tmp_path / "c", "--size", 16)
    assert result.exit_code == 1
    assert f"Error: {root / 'truth.txt'}:1: error: unknown gender label 'femal'" in result.output
    assert not (tmp_path / "c").exists()


def test_prepare_usage_error_exits_2(tmp_path):
    result = run("prepare", tmp_path, "--out-dir", tmp_path / "c", "--fit", "stretch")
    assert result.exit_code == 2


def test_seed_out_of_range_is_a_usage_error(tmp_path):
    """Every ``--seed`` takes what numpy's generators take (0 to 2^32 - 1); a negative one was a
    traceback from ``sample-data`` and ``train``. Nothing is written."""
    root = make_dataset(tmp_path / "d", {"a": 1})
    for name in ("m.keras", "s.txt"):
        (root / name).write_text("")
    for args in (["sample-data", tmp_path / "out"], ["train", root, "--run-dir", tmp_path / "r"],
                 ["predict", root, "--model", root / "m.keras"], ["score", "--truth", root, root / "s.txt"],
                 ["demo", "--out-dir", tmp_path / "res"]):
        for seed in ("-1", str(2**32)):
            result = run(*args, "--seed", seed)
            assert result.exit_code == 2, (args, result.output)
            assert f"Invalid value for '--seed': {seed} is not in the range 0<=x<=4294967295." in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_nan_is_refused_where_a_number_in_a_range_is_asked(tmp_path):
    """click's FloatRange lets nan through (every comparison with a bound is false): score's
    --at-precision nan was a traceback."""
    root = make_dataset(tmp_path / "d", {"a": 1})
    (root / "s.txt").write_text("")
    for args in (["score", "--truth", root, root / "s.txt", "--at-precision", "nan"],
                 ["sample-data", tmp_path / "out", "--signal", "nan"],
                 ["sample-data", tmp_path / "out", "--test-share", "nan"]):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "'nan' is not a number." in result.output
    assert not (tmp_path / "out").exists()


def test_a_master_spark_cannot_take_is_a_usage_error(tmp_path):
    """Spark answers a master it does not know with a Java stack trace; it is refused first."""
    root = make_dataset(tmp_path / "d", {"a": 1})
    (root / "m.keras").write_text("")
    for args in (["predict", root, "--model", root / "m.keras", "-o", tmp_path / "o.parquet"],
                 ["embed", root, "-o", tmp_path / "e.parquet"]):
        result = run(*args, "--engine", "spark", "--master", "bogus://x")
        assert result.exit_code == 2, result.output
        assert ("Invalid value for '--master': 'bogus://x' is not a Spark master: yarn, local, local[N] or "
                "local[*], spark://HOST:PORT or k8s://URL") in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
