import pytest

from data_prep.dataset import discover_users, load_dataset
from core.errors import DataError
from tests.helpers import make_dataset, save, solid


def test_reads_users_files_and_labels(tmp_path):
    root = make_dataset(tmp_path / "d", {"u1": 3, "u2": 2})
    ds = load_dataset(root)
    assert [u.user_id for u in ds.users] == ["u1", "u2"]
    assert [p.name for p in ds.users[0].files] == ["img00.png", "img01.png", "img02.png"]
    assert ds.users[1].labels == {"gender": "male", "location": "southeast", "occupation": "arts"}


def test_photo_folder_and_csv_truth(tmp_path):
    root = make_dataset(tmp_path / "d", {"a": 1}, truth="csv", image_dir="photo")
    ds = load_dataset(root)
    assert ds.image_dir.name == "photo" and ds.users[0].labels["gender"] == "female"


def test_without_truth_is_valid_for_prediction(tmp_path):
    root = make_dataset(tmp_path / "d", {"b": 1, "a": 2}, truth=None)
    ds = load_dataset(root)
    assert not ds.has_truth and [u.user_id for u in ds.users] == ["a", "b"]
    assert ds.users[0].labels is None


def test_hidden_files_are_ignored(tmp_path):
    root = make_dataset(tmp_path / "d", {"a": 1})
    (root / "images" / "a" / ".DS_Store").write_bytes(b"junk")
    assert len(load_dataset(root).users[0].files) == 1


def test_missing_folder_is_an_error_or_a_warning(tmp_path, caplog):
    root = make_dataset(tmp_path / "d", {"a": 1, "b": 1})
    (root / "truth.txt").write_text((root / "truth.txt").read_text() + "ghost:::male:::west:::arts\n")
    with pytest.raises(DataError, match=r"truth.txt: 1 user\(s\) have no image folder in .*: ghost \(use --allow-missing"):
        load_dataset(root)
    ds = load_dataset(root, missing="warn")
    assert ds.missing == ["ghost"] and [u.user_id for u in ds.users] == ["a", "b"]
    assert "ghost" in caplog.text


def test_unlabelled_folder_is_reported(tmp_path):
    root = make_dataset(tmp_path / "d", {"a": 1})
    save(solid((0, 0, 0)), root / "images" / "stray" / "x.png")
    ds = load_dataset(root)
    assert ds.unlabelled == ["stray"] and [u.user_id for u in ds.users] == ["a"]


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="not a dataset folder"):
        load_dataset(tmp_path)


def test_discover_users_mixes_datasets_and_user_folders(tmp_path):
    root = make_dataset(tmp_path / "d", {"a": 1, "b": 2}, truth=None)
    single = tmp_path / "someone"
    save(solid((0, 0, 0)), single / "x.png")
    users = discover_users([root, single])
    assert [u.user_id for u in users] == ["a", "b", "someone"]
    with pytest.raises(DataError, match="appears twice"):
        discover_users([single, single])
