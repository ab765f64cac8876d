"""Training on several workers (TensorFlow's MultiWorkerMirroredStrategy over localhost) and with
MirroredStrategy: the same model as one process, within float rounding."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from tests.helpers import make_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
#: tiny set-model settings; 34 training users in batches of 8: every batch splits evenly over two workers
COMMON = ["--epochs", "3", "--batch-size", "8", "-q", "--set", "encoder=tiny", "--set", "hidden=[4]",
          "--set", "dense=[4]", "--set", "cap=12", "--set", "calibrate=false"]
#: stated tolerance: the workers' gradients are summed in another order than one process sums them.
#: Relative too: a scalar weight that gathers every image's gradient (about 1.0) moved by up to
#: 9e-6 of its value once the EM started from the neighbours' labels (every other weight by
#: at most 1.1e-7; all within 1e-6 with the plain start)
ATOL, RTOL = 1e-6, 2e-5


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def profiler(args, env=None, **kwargs):
    command = [sys.executable, "-c", "from cli.main import main; main()", *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def weights(path):
    from profiler.models.io import load_model

    return load_model(path).get_weights()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("distribute")
    return make_dataset(root / "d", {f"u{i:02d}": [1, 3, 11, 14][i % 4] for i in range(40)}), root


def test_two_workers_train_the_model_one_worker_trains(data):
    d, root = data
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    runs = [profiler(["train", d, "--run-dir", root / "one", "--embeddings", root / "one.sqlite", *COMMON])]
    for i in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        runs.append(profiler(["train", d, "--run-dir", root / "two", "--embeddings", root / f"w{i}.sqlite",
                              "--distribute", "multiworker", *COMMON], env={"TF_CONFIG": config}))
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
    summary = json.loads((root / "two" / "summary.json").read_text())
    assert summary["distribute"] == {"mode": "multiworker", "workers": 2, "replicas": 2}
    assert not (root / "two" / "worker-1").exists()  # the other worker's files are gone
    for name in ("last.keras", "model.keras"):
        for a, b in zip(weights(root / "one" / name), weights(root / "two" / name)):
            np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)
    one = np.genfromtxt(root / "one" / "history.csv", delimiter=",", names=True)
    two = np.genfromtxt(root / "two" / "history.csv", delimiter=",", names=True)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)


def test_mirrored_on_this_machine_is_the_plain_run(data, tmp_path):
    d, root = data
    for name, extra in (("plain", []), ("mirrored", ["--distribute", "mirrored"])):
        result = CliRunner().invoke(main, ["train", str(d), "--run-dir", str(tmp_path / name), "--embeddings",
                                           str(tmp_path / "e.sqlite"), *COMMON, *extra])
        assert result.exit_code == 0, result.output
    for a, b in zip(weights(tmp_path / "plain" / "last.keras"), weights(tmp_path / "mirrored" / "last.keras")):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)


def test_multiworker_without_a_cluster_is_a_clear_error(data, tmp_path, monkeypatch):
    d, _ = data
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["train", str(d), "--run-dir", str(tmp_path / "r"), "--distribute",
                                       "multiworker", "--embeddings", str(tmp_path / "e.sqlite"), *COMMON])
    assert result.exit_code == 1
    assert ("--distribute multiworker reads the cluster from the environment variable TF_CONFIG, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}') in result.stderr
    assert "it is not set" in result.stderr and "Traceback" not in result.output
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    result = CliRunner().invoke(main, ["train", str(d), "--run-dir", str(tmp_path / "r"), "--distribute",
                                       "multiworker", "--embeddings", str(tmp_path / "e.sqlite"), *COMMON])
    assert result.exit_code == 1 and "it is not usable (the task must be one of the cluster's workers)" in result.stderr
