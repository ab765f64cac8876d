import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.main import main
from data_prep.cache import PrepareConfig, prepare
from core.errors import ConfigError, RunStateError
from core.labels import LABELS
from profiler.config import resolve
from profiler.models import load_model
from profiler.training import class_weights, split_indices, train
from tests.helpers import interrupt_after, make_dataset, tiny_cache

TINY = ["--model", "model1", "--set", "filters=[4,4,4,4]", "--set", "dense=[8]", "--batch-size", "4"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory.mktemp("train"), 24)


def tiny(**overrides):
    base = {"filters": [4, 4, 4, 4], "dense": [8], "batch_size": 4, "epochs": 3}
    return resolve("default", overrides={**base, **overrides})


def test_cli_run_directory_has_every_file(cache, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(cache.root), "--run-dir", str(out), "--epochs", "2", "-q",
                                       *TINY])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "curves.png", "history.csv", "last.keras", "model.keras", "summary.json",
        "train_state.json"]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["epochs_run"] == 2 and summary["train_users"] + summary["val_users"] == 24
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["filters"] == [4, 4, 4, 4] and recorded["size"] == 16  # the cache's size
    # the kept checkpoint carries the temperatures fitted on the validation split
    from profiler.models import model_info

    calibration = summary["calibration"]
    assert model_info(load_model(out / "model.keras"))["temperatures"] == {
        t: calibration[t]["temperature"] for t in calibration}
    for scores in calibration.values():
        assert scores["after"]["log_loss"] <= scores["before"]["log_loss"] + 1e-9
    again = CliRunner().invoke(main, ["train", str(cache.root), "--run-dir", str(out), "--epochs", "2", *TINY])
    assert again.exit_code == 1 and "a training run is already here; use --resume" in again.output


def test_interrupt_and_resume_equals_an_uninterrupted_run(cache, tmp_path):
    config = tiny()
    train(cache, tmp_path / "whole", config, progress=False)
    steps = 5  # 20 training users in batches of 4: interrupt in the middle of epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(cache, tmp_path / "cut", config, progress=False, callbacks=[interrupt_after(steps + 2)])
    assert (tmp_path / "cut" / "backup").is_dir()
    train(cache, tmp_path / "cut", config, progress=False, resume=True)
    whole = pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns="seconds")
    cut = pd.read_csv(tmp_path / "cut" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(whole, cut)
    a, b = load_model(tmp_path / "whole" / "last.keras"), load_model(tmp_path / "cut" / "last.keras")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(wa, wb)
    with pytest.raises(RunStateError, match="already finished"):
        train(cache, tmp_path / "cut", config, progress=False, resume=True)


def test_a_second_process_training_into_the_same_run_is_refused(cache, tmp_path):
    """While one process trains into RUN (it holds RUN/train.lock), another is refused before it
    writes anything; the lock goes with the process, and a finished run leaves no lock file."""
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / "train.lock", "w") as other:  # another open file: flock conflicts as another process's
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunStateError, match=f"{run_dir}: another process is training here now \\(it holds "
                                                f"{run_dir / 'train.lock'}\\); wait for it to end, or choose"):
            train(cache, run_dir, tiny(epochs=1), progress=False)
        assert sorted(p.name for p in run_dir.iterdir()) == ["train.lock"]
    train(cache, run_dir, tiny(epochs=1), progress=False)  # released (as a killed process's is)
    assert (run_dir / "model.keras").is_file() and not (run_dir / "train.lock").exists()


def test_killed_while_writing_the_last_outputs_resumes_to_the_same_run(cache, tmp_path):
    """Killed after the last epoch but before summary.json and curves.png were written (Keras has
    already deleted its backup): the run is not marked finished, and --resume ends the same."""
    config = tiny()
    train(cache, tmp_path / "whole", config, progress=False)
    train(cache, tmp_path / "cut", config, progress=False)
    state = tmp_path / "cut" / "train_state.json"
    saved = json.loads(state.read_text())
    assert saved["done"] is True
    state.write_text(json.dumps({**saved, "done": False}))  # as the run was before its last outputs
    (tmp_path / "cut" / "summary.json").unlink()
    (tmp_path / "cut" / "curves.png").unlink()
    train(cache, tmp_path / "cut", config, progress=False, resume=True)
    assert (tmp_path / "cut" / "summary.json").is_file() and (tmp_path / "cut" / "curves.png").is_file()
    a, b = load_model(tmp_path / "whole" / "last.keras"), load_model(tmp_path / "cut" / "last.keras")
    assert all(np.array_equal(wa, wb) for wa, wb in zip(a.get_weights(), b.get_weights()))
    whole = pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(whole, pd.read_csv(tmp_path / "cut" / "history.csv").drop(columns="seconds"))


def test_a_torn_backup_falls_back_to_the_one_before(cache, tmp_path):
    """Killed while Keras wrote the last epoch's backup: resume from the epoch before, same result."""
    config = tiny()
    train(cache, tmp_path / "whole", config, progress=False)
    with pytest.raises(KeyboardInterrupt):  # 5 steps an epoch: stop in the middle of epoch 3
        train(cache, tmp_path / "cut", config, progress=False, callbacks=[interrupt_after(12)])
    latest = tmp_path / "cut" / "backup" / "latest.weights.h5"
    assert (tmp_path / "cut" / "backup" / "latest.weights.h5.bkp").is_file()
    latest.write_bytes(latest.read_bytes()[:1000])  # torn
    train(cache, tmp_path / "cut", config, progress=False, resume=True)
    a, b = load_model(tmp_path / "whole" / "last.keras"), load_model(tmp_path / "cut" / "last.keras")
    assert all(np.array_equal(wa, wb) for wa, wb in zip(a.get_weights(), b.get_weights()))
    whole = pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(whole, pd.read_csv(tmp_path / "cut" / "history.csv").drop(columns="seconds"))


def test_a_torn_backup_with_none_before_starts_again_and_ends_the_same(cache, tmp_path, caplog, monkeypatch):
    """Killed while Keras wrote the first epoch's backup: nothing is safely kept, so --resume
    trains again from the start, says so, and ends with an uninterrupted run's weights."""
    config = tiny()
    train(cache, tmp_path / "whole", config, progress=False)
    with pytest.raises(KeyboardInterrupt):  # in epoch 2: only epoch 1's backup exists
        train(cache, tmp_path / "cut", config, progress=False, callbacks=[interrupt_after(7)])
    latest = tmp_path / "cut" / "backup" / "latest.weights.h5"
    assert not (tmp_path / "cut" / "backup" / "latest.weights.h5.bkp").exists()
    latest.write_bytes(latest.read_bytes()[:1000])
    monkeypatch.setattr(logging.getLogger("profiler"), "propagate", True)  # the CLI's set-up may have cut it
    with caplog.at_level("WARNING", logger="profiler"):
        train(cache, tmp_path / "cut", config, progress=False, resume=True)
    assert "the training backup cannot be read" in caplog.text and "training again from the start" in caplog.text
    a, b = load_model(tmp_path / "whole" / "last.keras"), load_model(tmp_path / "cut" / "last.keras")
    assert all(np.array_equal(wa, wb) for wa, wb in zip(a.get_weights(), b.get_weights()))
    whole = pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(whole, pd.read_csv(tmp_path / "cut" / "history.csv").drop(columns="seconds"))


def test_unknown_setting_suggests(cache, tmp_path):
    result = CliRunner().invoke(main, ["train", str(cache.root), "--run-dir", str(tmp_path / "r"),
                                       "--set", "learning_rat=0.1"])
    assert result.exit_code == 1
    assert "command line: unknown setting 'learning_rat' (did you mean 'learning_rate'?)" in result.output


def test_paper_preset_reads_decay_as_keras2_inverse_time():
    from profiler.training import learning_rate

    config = resolve("paper")
    assert (config.learning_rate, config.decay, config.epochs, config.batch_size) == (0.05, 0.7, 100, 13)
    schedule = learning_rate(config, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.05)
    assert float(schedule(10)) == pytest.approx(0.05 / (1 + 0.7 * 10))


def test_config_file_and_validation(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('learning_rate = 0.01\nhead_weights = {gender = 2.0, location = 1.0, occupation = 1.0}\n')
    config = resolve("default", file=path)
    assert config.learning_rate == 0.01 and config.head_weights["gender"] == 2.0
    with pytest.raises(ConfigError, match="unknown preset 'papr' \\(did you mean 'paper'\\?\\)"):
        resolve("papr")
    with pytest.raises(ConfigError, match="epochs must be a whole number from 1 to 100000, not 0"):
        resolve("default", overrides={"epochs": 0})
    with pytest.raises(ConfigError, match=r"filters needs 7 counts for model2 \(one per convolution\), not \[4, 4\]"):
        resolve("default", overrides={"model": "model2", "filters": "[4,4]"})
    # the latent head's source reader: a number, or null (null, none or off from the command line)
    assert resolve("default").latent_reader_l2 == 1e-3
    assert resolve("default", overrides={"latent_reader_l2": "null"}).latent_reader_l2 is None
    assert resolve("default", overrides={"latent_reader_l2": "0.01"}).latent_reader_l2 == 0.01
    with pytest.raises(ConfigError, match="latent_reader_l2 must be null or a number from 0 to 1e6, not -1.0"):
        resolve("default", overrides={"latent_reader_l2": "-1"})
    # the latent head's within-source whitening: a shrinkage share in (0, 1], or null
    assert resolve("default").latent_whiten == 0.3
    assert resolve("default", overrides={"latent_whiten": "off"}).latent_whiten is None
    for bad in ("0", "1.5"):
        with pytest.raises(ConfigError, match=f"latent_whiten must be null or a number above 0 and at most 1, "
                                              f"not {float(bad)!r}"):
            resolve("default", overrides={"latent_whiten": bad})
    # the latent head's EM start from the neighbours' labels: a trust in (0, 1), or null
    assert resolve("default").latent_start_trust == 0.8 and resolve("default").latent_rounds == 3
    assert resolve("default", overrides={"latent_start_trust": "0.5"}).latent_start_trust == 0.5
    assert resolve("default", overrides={"latent_start_trust": "null"}).latent_start_trust is None
    for bad in ("0", "1"):
        with pytest.raises(ConfigError, match=f"latent_start_trust must be null or a number between 0 and 1, "
                                              f"not {float(bad)!r}"):
            resolve("default", overrides={"latent_start_trust": bad})
    with pytest.raises(ConfigError, match="latent_start_temperature must be a positive number, not 0.0"):
        resolve("default", overrides={"latent_start_temperature": "0"})
    # ... its trust per neighbour rank: off by default, a boolean
    assert resolve("default").latent_start_by_rank is False
    assert resolve("default", overrides={"latent_start_by_rank": "true"}).latent_start_by_rank is True
    with pytest.raises(ConfigError, match="latent_start_by_rank must be true or false, not 'maybe'"):
        resolve("default", overrides={"latent_start_by_rank": "maybe"})
    with pytest.raises(ConfigError, match="latent_start_by_rank must be true or false, not 1"):
        resolve("default", overrides={"latent_start_by_rank": 1})
    # the bank's most images: a whole number from 1 to 2^24
    assert resolve("default").bank_images == 100_000
    assert resolve("default", overrides={"bank_images": "5000"}).bank_images == 5000
    for bad in ("0", str((1 << 24) + 1)):
        with pytest.raises(ConfigError, match=f"bank_images must be a whole number from 1 to 16777216, not {bad}"):
            resolve("default", overrides={"bank_images": bad})
    assert resolve("default").latent_refill is True
    assert resolve("default", overrides={"latent_refill": "false"}).latent_refill is False
    with pytest.raises(ConfigError, match="latent_refill must be true or false, not 'yes please'"):
        resolve("default", overrides={"latent_refill": "yes please"})
    # the latent head's pair sources: a JSON list of 'trait*trait'
    assert resolve("default").latent_pairs == []
    assert resolve("default", overrides={"latent_pairs": '["gender*occupation"]'}).latent_pairs == ["gender*occupation"]
    assert resolve("default", overrides={"latent_pairs": '["location*gender"]'}).latent_pairs == ["location*gender"]
    for bad in ('["gender*gender"]', '["gender*job"]', '["gender*occupation", "occupation*gender"]', '"gender"'):
        with pytest.raises(ConfigError, match=r"latent_pairs must be a list of distinct pairs of traits written "
                                              r"'gender\*occupation' \(traits gender, location, occupation\)"):
            resolve("default", overrides={"latent_pairs": bad})
    # the latent head's side view: its pairs and the traits read from it, both or neither
    side = resolve("default")
    assert (side.latent_side_pairs, side.latent_side_traits) == (["gender*occupation"], ["gender"])
    none = resolve("default", overrides={"latent_side_pairs": "[]", "latent_side_traits": "[]"})
    assert (none.latent_side_pairs, none.latent_side_traits) == ([], [])
    with pytest.raises(ConfigError, match="latent_side_pairs and latent_side_traits go together: give both or neither"):
        resolve("default", overrides={"latent_side_pairs": '["gender*occupation"]', "latent_side_traits": "[]"})
    with pytest.raises(ConfigError, match=r"latent_side_traits must be a list of distinct traits \(gender, location, "
                                          r"occupation\), not \['gender', 'gender'\]"):
        resolve("default", overrides={"latent_side_pairs": '["gender*occupation"]',
                                      "latent_side_traits": '["gender", "gender"]'})


def test_config_kinds_and_ranges(tmp_path):
    """Every setting is checked for its kind (a file gives JSON's or TOML's) before its range,
    and every count and rate has a range, so no setting reaches the code as a traceback or a
    memory blow-up."""
    path = tmp_path / "c.json"
    path.write_text('{"epochs": [1], "learning_rate": [0.1], "hidden": 5, "dense": [true], "flip": 1, '
                    '"latent_whiten": {}, "head_weights": {"gender": "a", "location": 1, "occupation": 1}}')
    with pytest.raises(ConfigError) as caught:
        resolve("default", file=path)
    assert str(caught.value) == (
        "invalid training configuration: flip must be true or false, not 1; dense must be a list of whole "
        "numbers, not [True]; hidden must be a list of whole numbers, not 5; latent_whiten must be a finite "
        "number or null, not {}; learning_rate must be a finite number, not [0.1]; epochs must be a whole "
        "number, not [1]; head_weights must be a table of finite numbers, not {'gender': 'a', 'location': 1, "
        "'occupation': 1}")
    cases = {"seed": ("-1", "seed must be a whole number from 0 to 4294967295, not -1"),
             "latent_neighbours": ("100000", "latent_neighbours must be a whole number from 1 to 1024, not 100000"),
             "max_images": ("0", "max_images must be a whole number from 1 to 4096, not 0"),
             "size": ("100000", "size must be a whole number from 8 to 1024, not 100000"),
             "patience": ("-1", "patience must be a whole number from 0 to 100000, not -1"),
             "learning_rate": ("inf", "learning_rate must be a finite number, not inf"),
             "latent_temperature": ("0", "latent_temperature must be a positive number, not 0.0"),
             "weight_decay": ("-1", "weight_decay must be a number from 0 up, not -1.0"),
             "hidden": ("[100000000]", "hidden must be a list of at most 16 layer widths from 1 to 65536, "
                                       "not [100000000]"),
             "head_weights": ('{"gender": 0, "location": 0, "occupation": 0}',
                              "head_weights must be numbers from 0 up, one at least above 0, not "
                              "{'gender': 0, 'location': 0, 'occupation': 0}")}
    for key, (value, message) in cases.items():
        with pytest.raises(ConfigError) as caught:
            resolve("default", overrides={key: value})
        assert str(caught.value) == "invalid training configuration: " + message
    with pytest.raises(ConfigError, match=r"filters must be counts from 1 to 4096, not \[0, 8, 8, 8\]"):
        resolve("default", overrides={"model": "model1", "filters": "[0, 8, 8, 8]"})
    fifo, big = tmp_path / "settings.json", tmp_path / "big.json"
    os.mkfifo(fifo)  # read, it would block; /dev/zero would fill the memory
    with pytest.raises(ConfigError, match="settings.json: settings must be a plain file, not a folder, device or pipe"):
        resolve("default", file=fifo)
    big.write_text("{" + " " * (1 << 20) + "}")
    with pytest.raises(ConfigError, match="big.json: a settings file of more than 1048576 bytes; settings take a few"):
        resolve("default", file=big)
    edge = resolve("default", overrides={"seed": str(2**32 - 1), "latent_neighbours": "1024", "patience": "0"})
    assert (edge.seed, edge.latent_neighbours, edge.patience) == (2**32 - 1, 1024, 0)


def test_training_needs_truth(tmp_path):
    root = make_dataset(tmp_path / "d", {"a": 1, "b": 1}, truth=None)
    result = CliRunner().invoke(main, ["train", str(root), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 1 and "no truth.txt, truth.csv or truth.jsonl; training needs labels" in result.output
    assert not (tmp_path / "r").exists()


def test_balanced_class_weights_by_hand():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0, 0.0])


def test_validation_split_is_stratified(cache):
    train_pos, val_pos = split_indices(cache, 0.25, seed=0)
    assert len(train_pos) == 18 and len(val_pos) == 6 and not set(train_pos) & set(val_pos)


@pytest.mark.slow
def test_learns_a_learnable_dataset(tmp_path):
    """Images whose colour tells the gender and location: training must beat the majority."""
    rng = np.random.default_rng(0)
    root = tmp_path / "d"
    lines = []
    for u in range(96):
        g, l = u % 2, (u // 2) % 3
        folder = root / "images" / f"u{u:03d}"
        folder.mkdir(parents=True)
        for j in range(4):
            pixels = rng.integers(0, 40, (16, 16, 3))
            pixels[..., 0] += 200 * g
            pixels[..., 1] += 100 * l
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{j}.png")
        lines.append(f"u{u:03d}:::{LABELS['gender'][g]}:::{LABELS['location'][l]}:::student")
    (root / "truth.txt").write_text("\n".join(lines) + "\n")
    cache = prepare(root, tmp_path / "c", config=PrepareConfig(height=16, width=16), workers=1,
                    progress=False)
    summary = train(cache, tmp_path / "run", resolve("default", overrides={
        "filters": [8, 8, 8, 8], "dense": [16], "batch_size": 8, "epochs": 12, "val_share": 0.25,
        "learning_rate": 3e-3}), progress=False)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    # majority macro-F: gender 1/2 * 2/3 = 0.33, location 1/3 * 1/2 = 0.17
    assert summary["validation"]["gender"]["macro_f"] > 0.6
    assert summary["validation"]["location"]["macro_f"] > 0.4


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\x81", b"[1, 2, 3]"])
def test_a_config_file_that_is_not_settings_is_a_clean_error(tmp_path, content):
    from click.testing import CliRunner

    from cli.main import main

    data = make_dataset(tmp_path / "d", {"a": 1, "b": 1, "c": 1, "d": 1})
    config = tmp_path / "settings.json"
    config.write_bytes(content)
    result = CliRunner().invoke(main, ["train", str(data), "--run-dir", str(tmp_path / "r"), "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert f"{config}: " in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


class _Fake:
    """A family whose ``finish`` records the users it refills with, and whose every model
    answers each user with its position plus the model's number (so who read whom shows)."""

    def __init__(self, refills=True):
        self.refills, self.finished = refills, []

    def finish(self, model, data, positions, config):
        if not self.refills:
            return model
        self.finished.append(np.asarray(positions))
        return len(self.finished) * 1000

    def batch(self, data, positions, config, rng):
        return np.asarray(positions, np.float32)[:, None]

    def runner(self, model):
        def run(chunk):
            value = chunk[:, 0] + model
            return {t: np.stack([value, -value], axis=1) for t in LABELS}, list(value)
        return run


def test_validation_users_are_read_through_a_bank_refilled_with_the_other_half():
    from profiler.training import _validation_outputs

    config = resolve("default", overrides={"model": "set", "batch_size": 4})
    train_pos, val_pos = np.arange(0, 20), np.arange(20, 31)
    family = _Fake()
    probs, items = _validation_outputs(0, family, None, val_pos, config, train_pos)
    assert len(family.finished) == 2
    read_by = {}
    for k, bank in enumerate(family.finished, start=1):
        assert set(train_pos) <= set(bank)  # every training user, and the other half only
        for row, p in enumerate(val_pos):
            if round(items[row]) == p + 1000 * k:
                read_by[p] = k
                assert p not in bank  # a user's own images are never in the bank that reads it
    assert sorted(read_by) == list(val_pos)  # every validation user read once, in its place
    assert sorted(np.bincount(list(read_by.values()))[1:]) == [5, 6]  # two halves
    assert np.allclose(probs["gender"][:, 0], items)
    # a family whose finish changes nothing, or the setting off: the checkpoint reads them all
    for family, setting in ((_Fake(refills=False), "true"), (_Fake(), "false")):
        config = resolve("default", overrides={"model": "set", "batch_size": 4, "calibrate_refilled": setting})
        probs, items = _validation_outputs(0, family, None, val_pos, config, train_pos)
        assert list(items) == list(val_pos) and family.finished == [] and np.allclose(probs["gender"][:, 0], val_pos)
