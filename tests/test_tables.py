"""core.tables: the hash lookup that replaces ``isin`` on Arrow strings gives isin's answers."""
import numpy as np
import pandas as pd
import pytest

from core.tables import in_index


@pytest.mark.parametrize("dtype", [object, "string", "str"])
def test_in_index_matches_isin_with_duplicates_and_missing(dtype):
    values = pd.Series(["u1", "u2", "u2", None, "x", "u3"], dtype=dtype)
    index = pd.Index(["u3", "u2", "u2", "u9"], dtype=dtype)
    got = in_index(values, index)
    assert got.dtype == bool
    assert got.tolist() == [False, True, True, False, False, True]
    assert got.tolist() == values.isin(index).tolist()


def test_in_index_missing_value_found_when_index_has_one():
    assert in_index(pd.Series(["a", None]), pd.Index(["a", None])).tolist() == [True, True]


def test_in_index_empty_and_numbers():
    assert in_index(pd.Series([], dtype=object), pd.Index(["a"])).tolist() == []
    assert in_index(np.array([3, 1, 2]), [1, 2]).tolist() == [False, True, True]
