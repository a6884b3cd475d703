"""Choosing the owner rank of every atom for a distributed evaluation.

A partition is given by name (``"lownn"``, ``"metis"``, ``"grid"``, ``"auto"``; the
partitioners live in :mod:`atomshard.partition`), as an explicit part vector, or as a
callable ``(structure, src, dst, shifts, n_parts) -> part``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Union

import numpy as np

from atomshard.errors import InputError
from atomshard.graph import Structure
from atomshard.partition import PartitionWarning, partition

PartitionFn = Callable[[Structure, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
PartitionSpec = Union[str, np.ndarray, PartitionFn]  # noqa: UP007 (runtime alias, py3.10)

#: Names accepted by ``--partition``.
PARTITION_NAMES = ("auto", "lownn", "metis", "grid")


def partition_atoms(
    spec: PartitionSpec,
    structure: Structure,
    src: np.ndarray,
    dst: np.ndarray,
    shifts: np.ndarray,
    n_parts: int,
    *,
    cutoff: float,
) -> np.ndarray:
    """The owner of every atom, ``[n_atoms]`` int64 in ``[0, n_parts)``.

    One part owns everything when ``n_parts == 1`` whatever the spec.
    """
    n = structure.n_atoms
    if n_parts == 1:
        return np.zeros(n, dtype=np.int64)
    if isinstance(spec, str):
        name = spec.lower()
        if name not in PARTITION_NAMES:
            raise InputError(
                f"--partition must be one of {', '.join(PARTITION_NAMES)}, got {spec!r}"
            )
        graph = {
            "positions": structure.positions,
            "cell": structure.cell,
            "pbc": structure.pbc,
            "src": src,
            "dst": dst,
            "shifts": shifts,
            "cutoff": cutoff,
        }
        with warnings.catch_warnings():
            # more ranks than atoms is allowed here: those ranks simply own nothing
            warnings.simplefilter("ignore", PartitionWarning)
            part = np.asarray(partition(graph, n_parts, method=name))
    elif callable(spec):
        part = np.asarray(spec(structure, src, dst, shifts, n_parts))
    else:
        part = np.asarray(spec)
    part = np.asarray(part)
    if part.shape != (n,) or not np.issubdtype(part.dtype, np.integer):
        raise InputError(f"a partition must be {n} integers (one per atom), got {part.shape}")
    if n and (part.min() < 0 or part.max() >= n_parts):
        raise InputError(
            f"partition assigns parts outside [0, {n_parts}): {part.min()}..{part.max()}"
        )
    return part.astype(np.int64)
