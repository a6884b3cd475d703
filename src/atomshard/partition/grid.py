"""Regular spatial grid partitioner (LAMMPS ``brick``-like) with an automatic processor grid."""

from __future__ import annotations

import numpy as np

from atomshard.partition._input import PartitionInput, check_n_parts, lattice_frame


def processor_grid(n_parts: int, lengths: np.ndarray) -> tuple[int, int, int]:
    """``(a, b, c)`` with ``a * b * c == n_parts`` minimising the surface of one brick.

    As LAMMPS chooses its processor grid: the brick of side ``lengths / (a, b, c)`` with
    the least surface area communicates least. Ties go to the first grid in
    lexicographic order.

    Args:
        lengths: ``[3]`` Å, the extent of the box along each axis (plane spacings).
    """
    best: tuple[float, tuple[int, int, int]] | None = None
    for a in range(1, n_parts + 1):
        if n_parts % a:
            continue
        for b in range(1, n_parts // a + 1):
            if (n_parts // a) % b:
                continue
            c = n_parts // (a * b)
            side = np.maximum(lengths, 1e-9) / np.array([a, b, c])
            area = side[0] * side[1] + side[1] * side[2] + side[0] * side[2]
            if best is None or area < best[0] * (1 - 1e-12):
                best = (float(area), (a, b, c))
    assert best is not None
    return best[1]


def grid_partition(
    graph: PartitionInput, n_parts: int, *, grid: tuple[int, int, int] | None = None
) -> np.ndarray:
    """Split the cell into equal bricks in lattice coordinates (see :func:`grid_layout`)."""
    return grid_layout(graph, n_parts, grid=grid)[0]


def grid_layout(
    graph: PartitionInput, n_parts: int, *, grid: tuple[int, int, int] | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Split the cell into equal bricks in lattice coordinates.

    Periodic axes are divided from fractional coordinate 0; non-periodic axes over the
    atoms' extent. Bricks have equal volume, not equal work, so inhomogeneous structures
    give imbalanced parts (that is what this baseline shows).

    Args:
        grid: processor grid ``(a, b, c)``; default :func:`processor_grid`.

    Returns:
        ``part``: ``[n_atoms]`` int64, part ``(i * b + j) * c + k`` for brick ``(i, j, k)``;
        ``layout``: ``{"dims", "lo", "width"}`` ([3] arrays), so that the brick of a
        fractional point ``f`` is ``clip(floor((f - lo) / width * dims), 0, dims - 1)``
        (used by :func:`atomshard.partition.regions.grid_regions`).
    """
    n = graph.n_atoms
    n_parts = check_n_parts(n_parts, n)
    frac, spacing = lattice_frame(graph.positions, graph.cell, graph.pbc)
    pbc = np.asarray(graph.pbc, dtype=bool)
    lo = np.where(pbc, 0.0, frac.min(axis=0, initial=np.inf) if n else 0.0)
    hi = np.where(pbc, 1.0, frac.max(axis=0, initial=-np.inf) if n else 1.0)
    if grid is None:
        grid = processor_grid(n_parts, (hi - lo) * spacing)
    dims = np.array(grid, dtype=np.int64)
    if dims.shape != (3,) or np.any(dims < 1) or int(np.prod(dims)) != n_parts:
        from atomshard.errors import InputError

        raise InputError(f"processor grid {grid} does not multiply to {n_parts} parts")
    width = np.where(hi > lo, hi - lo, 1.0)
    cell_index = np.floor((frac - lo) / width * dims).astype(np.int64)
    cell_index = np.clip(cell_index, 0, dims - 1)
    part = (cell_index[:, 0] * dims[1] + cell_index[:, 1]) * dims[2] + cell_index[:, 2]
    return part, {"dims": dims, "lo": lo, "width": width}
