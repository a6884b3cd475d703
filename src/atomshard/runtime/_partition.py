"""Choosing the owner rank of every atom for a distributed evaluation.

A partition is given by name (``"lownn"``, ``"metis"``, ``"grid"``, ``"auto"``; the
partitioners live in :mod:`atomshard.partition`), as an explicit part vector, or as a
callable ``(structure, src, dst, shifts, n_parts) -> part``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Union

import numpy as np

from atomshard.errors import InputError
from atomshard.graph import Structure

PartitionFn = Callable[[Structure, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
PartitionSpec = Union[str, np.ndarray, PartitionFn]  # noqa: UP007 (runtime alias, py3.10)

#: Names accepted by ``--partition``.
PARTITION_NAMES = ("auto", "lownn", "metis", "grid")


def _named(name: str) -> PartitionFn:
    """The partitioner called ``name`` from :mod:`atomshard.partition`."""
    try:
        module = importlib.import_module("atomshard.partition")
        partition_graph = module.partition_graph
    except (ImportError, AttributeError) as exc:
        raise InputError(
            f"partitioner {name!r} is not available in this installation ({exc})"
        ) from exc

    def run(
        structure: Structure, src: np.ndarray, dst: np.ndarray, shifts: np.ndarray, n_parts: int
    ) -> np.ndarray:
        return np.asarray(
            partition_graph(
                name,
                positions=structure.positions,
                cell=structure.cell,
                pbc=structure.pbc,
                src=src,
                dst=dst,
                shifts=shifts,
                n_parts=n_parts,
            )
        )

    return run


def partition_atoms(
    spec: PartitionSpec,
    structure: Structure,
    src: np.ndarray,
    dst: np.ndarray,
    shifts: np.ndarray,
    n_parts: int,
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
        part = _named(name)(structure, src, dst, shifts, n_parts)
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
