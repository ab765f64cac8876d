"""Small table helpers shared by scoring and the run records.

``Series.isin(index)`` with pandas' Arrow-backed strings (pandas >= 3) falls back to a
slow path when given an ``Index``: 24 s for a million user ids against 1.3 s for a hash
lookup (``bench/score_speed.py``). ``in_index`` is the hash lookup, for any dtype.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def in_index(values, index) -> np.ndarray:
    """A boolean array: is each of ``values`` one of ``index``'s entries.

    Same answer as ``pd.Series(values).isin(index)``, duplicates and missing values
    included (a missing value is in ``index`` only if ``index`` has one).
    """
    keys = pd.Index(index)
    if not keys.is_unique:
        keys = keys.unique()
    return keys.get_indexer(pd.Index(values)) >= 0
