"""Fault injection: ``prepare``, ``train`` and ``predict`` killed (SIGKILL) at seeded random
moments; the rerun (``--resume`` for training) gives what an uninterrupted run gives, and no
half-written output is ever visible under its final name."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import make_dataset

pytestmark = pytest.mark.slow
PROFILER = [sys.executable, "-c", "from cli.main import main; main()"]
ROOT = Path(__file__).resolve().parents[1]


def run(args, *, kill_after: float | None = None) -> int | None:
    """Run ``profiler args``; with ``kill_after``, SIGKILL it then (None if it was killed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROFILER_THREADS": "1"}
    process = subprocess.Popen(PROFILER + [str(a) for a in args], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    if kill_after is None:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0 and "Traceback" not in err, err
        assert "I0000" not in err and "cudart" not in err, err  # TensorFlow's start-up chatter stays quiet
        return process.returncode
    try:
        process.wait(timeout=kill_after)
        return process.returncode  # it finished first
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faults") / "d", {f"u{i:02d}": (i % 4) + 1 for i in range(24)})


def kill_times(seed: int, low: float, high: float, n: int = 2) -> list[float]:
    """Seeded moments within a command's run (measured here: prepare 0.7 s, predict 6 s and
    train 12 s with one thread each, most of the last two loading TensorFlow)."""
    return list(np.random.default_rng(seed).uniform(low, high, n))


def test_prepare_killed_then_rerun(data, tmp_path):
    start = time.perf_counter()
    run(["prepare", data, "--out-dir", tmp_path / "whole", "--size", 16, "-q", "-j", 1])
    took = time.perf_counter() - start  # 0.7 s where kill_times was measured; a CI run once outran 0.6 s
    killed = 0
    # moments within the run on this machine (fixed seconds outlived a fast machine's run)
    for k, delay in enumerate(kill_times(1, 0.15 * took, 0.85 * took)):
        out = tmp_path / f"cut{k}"
        killed += run(["prepare", data, "--out-dir", out, "--size", 16, "-q", "-j", 1], kill_after=delay) is None
        if out.exists():  # renamed into place only when complete
            assert json.loads((out / "meta.json").read_text())["n_users"] == 24
        run(["prepare", data, "--out-dir", out, "--size", 16, "-q", "-j", 1])
        for name in ("images.npy", "users.csv"):
            assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".cut{k}")]
    assert killed


def test_train_killed_then_resumed(data, tmp_path):
    from profiler.models import load_model

    common = ["train", data, "--model", "model1", "--epochs", 3, "--size", 16, "--batch-size", 4, "-q", "-j", 1,
              "--set", "filters=[4,4,4,4]", "--set", "dense=[8]", "--cache", tmp_path / "cache"]
    start = time.perf_counter()
    run(common + ["--run-dir", tmp_path / "whole"])
    took = time.perf_counter() - start  # 12 s where kill_times was measured; under 6.6 s in one CI run
    killed = 0
    # moments within the run on this machine (fixed seconds outlived a fast machine's run)
    for k, delay in enumerate(kill_times(2, 0.4 * took, 0.8 * took)):
        out = tmp_path / f"cut{k}"
        status = run(common + ["--run-dir", out], kill_after=delay)
        killed += status is None
        state = out / "train_state.json"
        if status is None and state.is_file() and json.loads(state.read_text()).get("done"):
            # killed after the run was complete, while the process exited: nothing to resume, and
            # every output is there (the run is marked finished only after the last one)
            assert (out / "summary.json").is_file() and (out / "curves.png").is_file()
        elif status is None:
            if state.is_file():
                run(common + ["--run-dir", out, "--resume"])
            else:  # killed before the first epoch finished: nothing to resume, start again
                run(common + ["--run-dir", out])
        a, b = load_model(tmp_path / "whole" / "last.keras"), load_model(out / "last.keras")
        assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert killed


def test_predict_killed_keeps_the_old_output(data, tmp_path):
    from profiler.models import Cnn3dProfiler, save_model

    model = save_model(Cnn3dProfiler("model1", filters=(4,) * 4, height=16, width=16, dense=(8,)),
                       tmp_path / "m.keras")
    args = ["predict", data, "--model", model, "--format", "csv", "-q", "-j", 1]
    start = time.perf_counter()
    run(args + ["-o", tmp_path / "whole.csv"])
    took = time.perf_counter() - start  # 6 s where kill_times was measured
    killed = 0
    for k, delay in enumerate(kill_times(3, 0.5 * took, 0.9 * took)):  # within this machine's run
        out = tmp_path / f"cut{k}.csv"
        out.write_text("the previous output\n")
        killed += run(args + ["-o", out], kill_after=delay) is None
        assert out.read_text() in ("the previous output\n", (tmp_path / "whole.csv").read_text())
        run(args + ["-o", out])
        assert out.read_bytes() == (tmp_path / "whole.csv").read_bytes()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".cut{k}")] == []
    assert killed
