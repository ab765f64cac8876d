"""Hostile and faulty input: clean errors naming the file, no traceback, good output kept."""
import json
import os
import stat
import zipfile

import pytest
from click.testing import CliRunner

from cli.main import main
from core.errors import ModelFileError
from core.io import atomic_dir, atomic_write_text
from tests.helpers import make_dataset

UMASK = os.umask(0)
os.umask(UMASK)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_keep_or_get_ordinary_permissions(tmp_path):
    new = tmp_path / "new.md"
    atomic_write_text(new, "x")
    assert mode(new) == 0o666 & ~UMASK  # not the temporary file's private 0600
    shared = tmp_path / "shared.md"
    shared.write_text("old")
    os.chmod(shared, 0o644)
    atomic_write_text(shared, "new")
    assert mode(shared) == 0o644 and shared.read_text() == "new"
    private = tmp_path / "private.md"
    private.write_text("old")
    os.chmod(private, 0o600)
    atomic_write_text(private, "new")
    assert mode(private) == 0o600
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "a").write_text("a")
    assert mode(tmp_path / "folder") == 0o777 & ~UMASK


def test_a_folder_is_replaced_in_one_step_and_never_missing(tmp_path, monkeypatch):
    from core import io

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "old").write_text("old")
    os.chmod(folder, 0o750)
    if io._renameat2() is None:
        pytest.skip("no renameat2 here: the two-rename fallback is used")

    def no_rename(*args):  # the swap must not go through a moment with no folder
        raise AssertionError(f"os.replace{args}")

    monkeypatch.setattr(io.os, "replace", no_rename)
    with atomic_dir(folder) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["new"] and mode(folder) == 0o750
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old content is gone, nothing left beside


def test_the_longest_legal_file_name_can_be_written(tmp_path):
    longest = tmp_path / ("a" * 255)
    atomic_write_text(longest, "x")
    assert longest.read_text() == "x" and [p.name for p in tmp_path.iterdir()] == ["a" * 255]


def test_a_device_a_pipe_or_a_link_is_written_through_not_replaced(tmp_path):
    """``-o /dev/null`` run as root renamed a plain file over the system's /dev/null. A device
    or a pipe is now written in place; a link stays a link, and the file it names is replaced."""
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    atomic_write_text(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == ["through the pipe"] and stat.S_ISFIFO(fifo.lstat().st_mode)
    with pytest.raises(FileExistsError, match="a device or a pipe, not a folder to write into"):
        with atomic_dir(fifo):  # a folder output (a cache, a Parquet folder) is refused there
            pass
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    target, link = tmp_path / "target.txt", tmp_path / "link.txt"
    target.write_text("old")
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    device = tmp_path / "null"
    try:  # a copy of /dev/null's device node (root only): never the real one, should this fail
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        return
    atomic_write_text(device, "gone")
    assert stat.S_ISCHR(device.lstat().st_mode)
    with pytest.raises(FileExistsError, match="a device or a pipe, not a folder to write into"):
        with atomic_dir(device):
            pass
    assert stat.S_ISCHR(device.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "null", "pipe", "target.txt"]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_a_write_error_is_a_clean_error(tmp_path):
    data = make_dataset(tmp_path / "d", {"a": 1, "b": 1})
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    result = run("score", "-t", data / "truth.txt", "--baselines", "-o", blocker / "scores.md")
    assert result.exit_code == 1 and "file.txt" in result.output and blocker.read_text() == "not a folder"
    result = run("sample-data", blocker / "data", "--users", 20, "-q")
    assert result.exit_code == 1 and blocker.read_text() == "not a folder"
    assert f"Error: {blocker}: a file is there, where a folder was to be made" in result.output
    if os.path.isdir("/proc/self"):  # Linux: no file can be made in /proc; the error names what was asked
        result = run("score", "-t", data / "truth.txt", "--baselines", "-o", "/proc/profiler-test.md")
        assert result.exit_code == 1 and "Error: /proc/profiler-test.md: " in result.output


def test_a_keras_model_from_elsewhere_is_named_for_what_it_is(tmp_path):
    import keras

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "other.keras")
    data = make_dataset(tmp_path / "d", {"a": 1})
    result = run("predict", data, "--model", tmp_path / "other.keras", "-q")
    assert result.exit_code == 1 and "other.keras: a Keras model, but not one that 'profiler train' made" in result.output


def craft(tmp_path, change) -> str:
    """A profiler model file whose config ``change`` edits; the path of the crafted file."""
    from profiler.models import Cnn3dProfiler, save_model

    save_model(Cnn3dProfiler("model1", filters=(4,) * 4, height=16, width=16, dense=(8,)), tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    change(config["config"])
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "evil.keras", "w") as z:
        for name, blob in files.items():
            z.writestr(name, blob)
    return tmp_path / "evil.keras"


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update(height=100_000, width=100_000), "height must be whole numbers from 8 to 2048"),
    (lambda c: c.update(p=10 ** 9), "p must be whole numbers from 1 to 256"),
    (lambda c: c["labels"]["gender"].__setitem__(0, "a:::b\n" * 100_000), "label vocabularies differ"),
    (lambda c: c.update(temperatures={"gender": -1}), "temperatures must be numbers"),
])
def test_a_crafted_model_config_is_refused_before_anything_is_built(tmp_path, change, message):
    from profiler.models import load_model

    path = craft(tmp_path, change)
    with pytest.raises(ModelFileError, match="evil.keras: not a loadable profiler model") as caught:
        load_model(path)
    assert message in str(caught.value) and len(str(caught.value)) < 2000  # long values are cut


def test_predict_refuses_the_crafted_file_through_the_cli(tmp_path):
    path = craft(tmp_path, lambda c: c.update(height=100_000, width=100_000))
    data = make_dataset(tmp_path / "d", {"a": 1})
    out = tmp_path / "out.json"
    out.write_text("good")
    result = run("predict", data, "--model", path, "-o", out, "-q")
    assert result.exit_code == 1 and "height must be whole numbers" in result.output and out.read_text() == "good"


def test_names_that_are_not_utf8_are_left_out_with_a_warning(tmp_path):
    data = make_dataset(tmp_path / "d", {"u1": 2, "u2": 2, "u3": 1})
    os.rename(os.fsencode(data / "images" / "u1" / "img00.png"), os.fsencode(data / "images" / "u1") + b"/\xffimg.png")
    os.rename(os.fsencode(data / "images" / "u2"), os.fsencode(data / "images") + b"/u\xff2")
    result = run("prepare", data, "--out-dir", tmp_path / "c", "-q", "--allow-missing")
    assert result.exit_code == 0, result.output
    assert "u1/\\xffimg.png: the file name is not valid UTF-8" in result.output
    assert "u\\xff2: the user folder name is not valid UTF-8" in result.output
    users = (tmp_path / "c" / "users.csv").read_text()
    assert "u1" in users and "u3" in users and "\\x" not in users
    from core.errors import DataError
    from data_prep.dataset import discover_users

    with pytest.raises(DataError, match=r"u\\xff2: the folder name is not valid UTF-8"):
        discover_users([os.fsdecode(os.fsencode(data / "images") + b"/u\xff2")])


def test_what_a_killed_writer_left_is_removed_and_a_live_writers_files_are_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    target = tmp_path / "out.txt"
    left = [tmp_path / f".out.txt.{dead}.abc123.tmp", tmp_path / f".out.txt.tmp-{dead}-xyz",
            tmp_path / f".out.txt.{dead}.def456.tmp.keras"]  # a writer that needs an extension
    left[0].write_text("half")
    left[1].mkdir()
    left[2].write_text("half")
    live = tmp_path / f".out.txt.{os.getpid()}.zzz999.tmp"
    live.write_text("being written")
    other = tmp_path / f".out.txt.1.{dead}.abc.tmp"  # the temporary file of "out.txt.1", not ours
    other.write_text("x")
    atomic_write_text(target, "done")
    assert target.read_text() == "done" and not any(p.exists() for p in left)
    assert live.exists() and other.exists()


def test_a_weights_file_cannot_run_code(tmp_path):
    import pickle

    from profiler.encoders.torch_pickle import MAGIC, load_state_dict

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    for position in range(3):  # in the magic number's place, the protocol's, the system info's
        header = [MAGIC, 1001, {"little_endian": True}]
        header[position] = Evil()
        path = tmp_path / f"evil{position}.pth"
        path.write_bytes(b"".join(pickle.dumps(part) for part in header))
        with pytest.raises(pickle.UnpicklingError, match="unsupported object"):
            load_state_dict(path)
    assert not (tmp_path / "ran").exists()
    from profiler.encoders.efficientnet_lite import EfficientNetLite0Encoder

    real = load_state_dict(EfficientNetLite0Encoder().weights_path)  # the real file still loads
    assert real["_fc.weight"].shape == (1000, 1280)


def test_a_submission_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    data = make_dataset(tmp_path / "d", {"a": 1, "b": 1})
    bad = tmp_path / "latin.txt"
    bad.write_bytes("a:::female:::center:::arts\nb:::m\u00e4le:::north:::sports\n".encode("latin-1"))
    result = run("score", "-t", data / "truth.txt", bad)
    assert result.exit_code == 1 and f"{bad}:2: error: not UTF-8 text" in result.output


def test_a_huge_label_is_not_echoed_whole(tmp_path):
    data = make_dataset(tmp_path / "d", {"u00": 1})
    big = tmp_path / "big.txt"
    big.write_text("u00:::" + "x" * 5_000_000 + ":::center:::arts\n")
    result = run("score", "-t", data / "truth.txt", big)
    assert result.exit_code == 1 and "(5,000,000 characters)" in result.output and len(result.output) < 2000


def test_an_output_over_an_input_is_refused_before_any_work(tmp_path):
    """embed's --output the embedding cache (even one not made yet), explain's --output one of
    the user's images: usage errors, the files untouched."""
    data = make_dataset(tmp_path / "d", {"a": 2, "b": 1})
    cache = tmp_path / "cache.sqlite"
    result = run("embed", data, "-o", cache, "--embeddings", cache, "-q")
    assert result.exit_code == 2 and not cache.exists()
    assert f"--output {cache} is the embedding cache, which this command reads; choose another file" in result.output
    image = sorted((data / "images" / "a").iterdir())[0]
    before = image.read_bytes()
    (tmp_path / "m.keras").write_bytes(b"not read")
    result = run("explain", data / "images" / "a", "-m", tmp_path / "m.keras", "-o", image)
    assert result.exit_code == 2 and image.read_bytes() == before
    assert f"--output {image} is one of the user's images, which this command reads" in result.output
