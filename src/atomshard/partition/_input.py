"""What a partitioner reads: geometry, edges and cutoff as numpy arrays."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from atomshard.errors import InputError


class PartitionWarning(UserWarning):
    """A partition that is valid but not what was asked for (e.g. empty parts)."""


@dataclass(frozen=True, eq=False)
class PartitionInput:
    """A graph as plain numpy arrays (what every partitioner takes).

    Shapes:
        positions: ``[n_atoms, 3]`` float64, Å
        cell: ``[3, 3]`` float64, Å, rows are lattice vectors (rows of non-periodic
            axes may be zero)
        pbc: ``[3]`` bool
        src, dst: ``[n_edges]`` int64
        shifts: ``[n_edges, 3]`` int64
        cutoff: Å, the interaction range the edges were built with
    """

    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    shifts: np.ndarray
    cutoff: float

    @property
    def n_atoms(self) -> int:
        return len(self.positions)

    @property
    def n_edges(self) -> int:
        return len(self.src)

    def degree(self) -> np.ndarray:
        """``[n_atoms]`` int64 incoming edges per atom (= edges the atom's owner holds)."""
        return np.bincount(self.dst, minlength=self.n_atoms).astype(np.int64)


def as_partition_input(graph: Any) -> PartitionInput:
    """A :class:`PartitionInput` from an ``AtomicGraph``, a ``PartitionInput`` or a mapping.

    Raises:
        InputError: on inconsistent shapes, a non-positive cutoff or edge indices out of
            range.
    """
    if isinstance(graph, PartitionInput):
        return graph
    if isinstance(graph, dict):
        fields = dict(graph)
    else:
        names = ("positions", "cell", "pbc", "src", "dst", "shifts", "cutoff")
        try:
            fields = {name: getattr(graph, name) for name in names}
        except AttributeError as exc:
            raise InputError(
                f"cannot partition a {type(graph).__name__}: need an AtomicGraph, a "
                f"PartitionInput or a mapping with positions/cell/pbc/src/dst/shifts/cutoff"
            ) from exc

    def arr(name: str, dtype: Any) -> np.ndarray:
        value = fields[name]
        if hasattr(value, "detach"):  # a torch tensor; partition never needs autograd
            value = value.detach().cpu().numpy()
        return np.ascontiguousarray(np.asarray(value), dtype=dtype)

    try:
        positions = arr("positions", np.float64).reshape(-1, 3)
        cell = arr("cell", np.float64).reshape(3, 3)
        pbc = arr("pbc", bool).reshape(3)
        src = arr("src", np.int64).reshape(-1)
        dst = arr("dst", np.int64).reshape(-1)
        shifts = arr("shifts", np.int64).reshape(-1, 3)
        cutoff = float(fields["cutoff"])
    except KeyError as exc:
        raise InputError(f"partition input is missing {exc.args[0]!r}") from None
    except ValueError as exc:
        raise InputError(f"partition input has a badly shaped array: {exc}") from None
    n = len(positions)
    if not cutoff > 0:
        raise InputError(f"cutoff must be positive, got {cutoff}")
    if not np.all(np.isfinite(positions)):
        raise InputError("positions must be finite")
    if not (len(src) == len(dst) == len(shifts)):
        raise InputError(f"src/dst/shifts lengths differ: {len(src)}, {len(dst)}, {len(shifts)}")
    if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise InputError(f"edge endpoints must be atom indices in [0, {n})")
    return PartitionInput(positions, cell, pbc, src, dst, shifts, cutoff)


def check_n_parts(n_parts: Any, n_atoms: int) -> int:
    """Validate a part count; warn (:class:`PartitionWarning`) when parts must stay empty."""
    if isinstance(n_parts, bool) or not isinstance(n_parts, int | np.integer):
        raise InputError(f"number of parts must be an integer, got {n_parts!r}")
    if n_parts < 1:
        raise InputError(f"number of parts must be >= 1, got {n_parts}")
    if n_parts > n_atoms:
        warnings.warn(
            f"{n_parts} parts for {n_atoms} atoms: {n_parts - n_atoms} parts will be empty",
            PartitionWarning,
            stacklevel=3,
        )
    return int(n_parts)


def lattice_frame(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional coordinates along the lattice vectors, and the plane spacings.

    Periodic axes use their cell vectors. A non-periodic axis keeps its cell vector when
    the cell is non-singular, else gets a unit vector orthogonal to the other axes, so
    its coordinate is in Å. Cuts at constant fractional coordinate are lattice planes,
    which is how triclinic cells are cut.

    Shapes:
        returns: ``frac [n_atoms, 3]`` (periodic axes wrapped into ``[0, 1)``),
        ``spacing [3]`` Å between the planes ``frac = 0`` and ``frac = 1`` of each axis.
    """
    basis = np.array(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    norms = np.linalg.norm(basis, axis=1)
    singular = np.any(norms[~pbc] == 0) or abs(np.linalg.det(basis)) <= 1e-9 * np.prod(
        np.maximum(norms, 1e-300)
    )
    if singular:
        if abs(np.linalg.matrix_rank(basis[pbc])) < int(pbc.sum()):
            raise InputError("the cell vectors of the periodic axes are linearly dependent")
        ortho: list[np.ndarray] = []
        for v in basis[pbc]:
            for o in ortho:
                v = v - (v @ o) * o
            ortho.append(v / np.linalg.norm(v))
        extra: list[np.ndarray] = []
        for e in np.eye(3):
            for o in ortho + extra:
                e = e - (e @ o) * o
            if np.linalg.norm(e) > 1e-6 and len(ortho) + len(extra) < 3:
                extra.append(e / np.linalg.norm(e))
        for axis, vector in zip(np.flatnonzero(~pbc), extra):
            basis[axis] = vector
    inverse = np.linalg.inv(basis)
    frac = positions @ inverse
    frac[:, pbc] -= np.floor(frac[:, pbc])
    frac[:, pbc] = np.where(frac[:, pbc] >= 1.0, 0.0, frac[:, pbc])
    spacing = 1.0 / np.linalg.norm(inverse, axis=0)
    return frac, spacing
