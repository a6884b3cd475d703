"""Distinct (part, atom) pairs without sorting millions of keys."""

from __future__ import annotations

import numpy as np

#: Largest ``n_parts * n_atoms`` for which dense tables replace sorting (16 M entries).
DENSE_LIMIT = 1 << 24


def unique_pairs(major: np.ndarray, minor: np.ndarray, n_major: int, n_minor: int) -> np.ndarray:
    """Sorted distinct keys ``major * n_minor + minor``.

    A scatter into a ``[n_major * n_minor]`` boolean table is O(n) where ``np.unique``
    sorts; it is used while the table stays under :data:`DENSE_LIMIT` entries (e.g. 128
    parts x 24k atoms = 3 M), with ``np.unique`` beyond.

    Shapes:
        major, minor: ``[k]`` int64; returns ``[n_distinct]`` int64, ascending.
    """
    key = major * n_minor + minor
    size = int(n_major) * int(n_minor)
    if size > DENSE_LIMIT:
        return np.unique(key)
    table = np.zeros(size, dtype=bool)
    table[key] = True
    return np.flatnonzero(table).astype(np.int64)
