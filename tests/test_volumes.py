import numpy as np
import pytest

from data_prep.volumes import build_volume, select_indices


@pytest.mark.parametrize("n,p,expected", [
    (3, 7, [0, 1, 2, 0, 1, 2, 0]),
    (11, 11, list(range(11))),
    (21, 11, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]),
    (1, 4, [0, 0, 0, 0]),
])
def test_deterministic_selection(n, p, expected):
    assert select_indices(n, p).tolist() == expected


def test_random_selection_is_a_choice_without_repeats():
    rng = np.random.default_rng(0)
    idx = select_indices(30, 11, rng=rng)
    assert len(set(idx.tolist())) == 11 and idx.max() < 30
    fill = select_indices(4, 11, rng=np.random.default_rng(1))
    assert sorted(set(fill.tolist())) == [0, 1, 2, 3]
    assert np.bincount(fill).tolist() in ([3, 3, 3, 2], [3, 3, 2, 3], [3, 2, 3, 3], [2, 3, 3, 3])


def test_no_images_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        select_indices(0, 11)


def test_build_volume_fills_cyclically():
    images = np.arange(3, dtype=np.uint8)[:, None, None, None] * np.ones((3, 2, 2, 3), np.uint8)
    volume, real = build_volume(images, 5)
    assert volume.shape == (5, 2, 2, 3) and real == 3
    assert volume[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1]
