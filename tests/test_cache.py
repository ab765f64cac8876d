import json

import numpy as np
import pytest

from data_prep.cache import Cache, PrepareConfig, candidate_order, prepare
from core.errors import DataError
from tests.helpers import COLORS, make_dataset, png_header_only, save, solid, truncated_jpeg

CONFIG = PrepareConfig(height=16, width=16)


def test_round_trip_is_exact(tmp_path):
    root = make_dataset(tmp_path / "d", {"a": 3, "b": 12, "c": 1})
    cache = prepare(root, tmp_path / "cache", config=CONFIG, workers=1, progress=False)
    assert cache.user_ids == ["a", "b", "c"]
    assert cache.images.shape == (16, 16, 16, 3)
    assert cache.index["n_images"].tolist() == [3, 12, 1]
    for j in range(12):
        assert np.all(cache.user_images(1)[j] == COLORS[j])
    volume = cache.volume(0, 11)
    assert volume.shape == (11, 16, 16, 3)
    assert [tuple(v[0, 0]) for v in volume] == [COLORS[j % 3] for j in range(11)]
    # 12 images, p = 11: an even spread, first and last included
    assert [tuple(v[0, 0]) for v in cache.volume(1, 11)] == [COLORS[j] for j in
                                                             [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]]
    assert cache.real_counts(11).tolist() == [3, 11, 1]
    assert cache.labels("gender").tolist() == [0, 1, 0]
    reopened = Cache.open(tmp_path / "cache")
    assert np.array_equal(reopened.images, cache.images)


def test_random_volume_draws_from_all_images(tmp_path):
    root = make_dataset(tmp_path / "d", {"b": 12})
    cache = prepare(root, tmp_path / "cache", config=CONFIG, workers=1, progress=False)
    rng = np.random.default_rng(0)
    seen = {tuple(v[0, 0]) for _ in range(20) for v in cache.volume(0, 11, rng=rng)}
    assert len(seen) == 12


def test_bad_files_are_skipped_and_reported(tmp_path, caplog):
    root = make_dataset(tmp_path / "d", {"a": 2, "b": 0, "c": 0})
    folder = root / "images"
    (folder / "a" / "zero.jpg").write_bytes(b"")
    truncated_jpeg(folder / "a" / "trunc.jpg")
    (folder / "a" / "notes.txt").write_text("hello")
    png_header_only(folder / "a" / "bomb.png", 20000, 20000)
    (folder / "c" / "broken.png").write_text("x")
    cache = prepare(root, tmp_path / "cache", config=CONFIG, workers=1, progress=False)
    assert cache.user_ids == ["a"]
    assert cache.meta["users_without_images"] == ["b", "c"]
    assert cache.meta["n_skipped_files"] == 5
    skipped = (tmp_path / "cache" / "skipped.csv").read_text()
    assert "zero.jpg" in skipped and "empty file (0 bytes)" in skipped
    assert "no files: user left out" in skipped and "no usable image: user left out" in skipped
    assert json.loads(cache.index["files"][0]) == ["img00.png", "img01.png"]
    assert "skipped" in caplog.text and "2 user(s) have no usable image" in caplog.text


def test_max_images_keeps_an_even_spread(tmp_path):
    assert candidate_order(5, 3) == [0, 2, 4, 1, 3]
    root = make_dataset(tmp_path / "d", {"a": 13})
    config = PrepareConfig(height=16, width=16, max_images=5)
    cache = prepare(root, tmp_path / "cache", config=config, workers=1, progress=False)
    assert json.loads(cache.index["files"][0]) == ["img00.png", "img03.png", "img06.png",
                                                    "img09.png", "img12.png"]


def test_unchanged_dataset_reuses_the_cache(tmp_path):
    root = make_dataset(tmp_path / "d", {"a": 2})
    assert not prepare(root, tmp_path / "cache", config=CONFIG, workers=1, progress=False).reused
    stamp = (tmp_path / "cache" / "images.npy").stat().st_mtime_ns
    again = prepare(root, tmp_path / "cache", config=CONFIG, workers=1, progress=False)
    assert again.reused and "up to date, reused: 1 users" in again.summary()
    assert (tmp_path / "cache" / "images.npy").stat().st_mtime_ns == stamp
    save(solid((9, 9, 9)), root / "images" / "a" / "new.png")
    cache = prepare(root, tmp_path / "cache", config=CONFIG, workers=1, progress=False)
    assert not cache.reused and cache.index["n_images"].tolist() == [3]


def test_parallel_workers_give_identical_caches(tmp_path):
    root = make_dataset(tmp_path / "d", {f"u{i}": i % 4 + 1 for i in range(6)})
    one = prepare(root, tmp_path / "c1", config=CONFIG, workers=1, progress=False)
    two = prepare(root, tmp_path / "c2", config=CONFIG, workers=2, progress=False)
    assert np.array_equal(one.images, two.images) and one.index.equals(two.index)


def test_interrupted_run_keeps_the_old_cache(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "d", {"a": 2})
    prepare(root, tmp_path / "cache", config=CONFIG, workers=1, progress=False)
    save(solid((9, 9, 9)), root / "images" / "a" / "new.png")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("data_prep.cache._shrink_npy", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(root, tmp_path / "cache", config=CONFIG, workers=1, progress=False)
    assert Cache.open(tmp_path / "cache").index["n_images"].tolist() == [2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "d"]


def test_not_a_cache(tmp_path):
    with pytest.raises(DataError, match="not a prepared cache"):
        Cache.open(tmp_path)


@pytest.mark.parametrize("via", ["prepare", "train"])
def test_a_folder_that_is_not_a_cache_is_never_replaced(tmp_path, via):
    """Someone's documents at --out-dir (or train's --cache): refused, exit 1, every byte kept."""
    from click.testing import CliRunner

    from cli.main import main

    data = make_dataset(tmp_path / "d", {"a": 2, "b": 2, "c": 1, "d": 1})
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_bytes(b"four years of work\n")
    args = (["prepare", str(data), "--out-dir", str(docs), "--size", "16", "-q"] if via == "prepare" else
            ["train", str(data), "--model", "model1", "--run-dir", str(tmp_path / "r"), "--cache", str(docs),
             "--size", "16", "-q"])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert f"{docs}: exists and is not a profiler cache" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in docs.iterdir()) == ["thesis.txt"]
    assert (docs / "thesis.txt").read_bytes() == b"four years of work\n"
    if via == "prepare":  # --force rebuilds a cache; it never replaces a folder that is not one
        result = CliRunner().invoke(main, args + ["--force"])
        assert result.exit_code == 1 and "it is never replaced, even with --force" in result.output
        assert (docs / "thesis.txt").read_bytes() == b"four years of work\n"
    # an empty folder, or a cache of ours, is fine
    (docs / "thesis.txt").unlink()
    for _ in range(2):
        assert CliRunner().invoke(main, ["prepare", str(data), "--out-dir", str(docs), "--size", "16",
                                         "-q", "--force"]).exit_code == 0


@pytest.mark.parametrize("where", ["dataset", "parent", "images", "user"])
def test_a_cache_folder_over_the_dataset_is_refused_even_with_force(tmp_path, where):
    """--out-dir the dataset itself (or a folder holding it, or one among its users' folders)
    would replace the images the cache is made from: refused with --force too, every file kept."""
    from click.testing import CliRunner

    from cli.main import main

    data = make_dataset(tmp_path / "d", {"a": 2, "b": 2, "c": 1, "d": 1})
    out = {"dataset": data, "parent": tmp_path, "images": data / "images",
           "user": data / "images" / "cache"}[where]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["prepare", str(data), "--out-dir", str(out), "--size", "16", "-q",
                                       "--force"])
    assert result.exit_code == 1, result.output
    expected = ("would replace the dataset" if where in ("dataset", "parent")
                else "is inside the dataset's image folders")
    assert f"Error: {out}: the cache folder {expected}" in result.output
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (data / "images" / "cache").exists()
    # a folder inside the dataset but beside its images is fine
    assert CliRunner().invoke(main, ["prepare", str(data), "--out-dir", str(data / "cache"), "--size", "16",
                                     "-q"]).exit_code == 0
