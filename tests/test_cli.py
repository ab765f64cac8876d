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
