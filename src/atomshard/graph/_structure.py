"""A validated periodic or finite structure: positions, species, cell, pbc."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atomshard.errors import InputError

#: Two atoms closer than this (Å) are almost certainly a broken input, not physics.
MIN_DISTANCE = 0.1


@dataclass(frozen=True, eq=False)
class Structure:
    """One configuration of atoms, in plain numpy float64.

    Shapes:
        positions: ``[n_atoms, 3]`` float64, Å
        species: ``[n_atoms]`` int64, atomic numbers
        cell: ``[3, 3]`` float64, Å, rows are lattice vectors (zeros on non-periodic axes allowed)
        pbc: ``[3]`` bool
    """

    positions: np.ndarray
    species: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray

    @classmethod
    def from_ase(cls, atoms, *, name: str = "structure") -> Structure:
        """Build from an :class:`ase.Atoms`, validating it (see :func:`check_structure`)."""
        s = cls(
            positions=np.array(atoms.get_positions(), dtype=np.float64),
            species=np.array(atoms.get_atomic_numbers(), dtype=np.int64),
            cell=np.array(atoms.get_cell().array, dtype=np.float64),
            pbc=np.array(atoms.get_pbc(), dtype=bool),
        )
        check_structure(s, name=name)
        return s

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    def to_ase(self):
        import ase

        return ase.Atoms(
            numbers=self.species, positions=self.positions, cell=self.cell, pbc=self.pbc
        )


def check_structure(s: Structure, *, name: str = "structure", min_distance: float = MIN_DISTANCE):
    """Raise :class:`InputError` naming the problem if ``s`` is not a usable structure.

    Checks: at least one atom; finite positions (names the first bad atom); a
    non-singular cell along periodic axes; no two atoms (including periodic images)
    closer than ``min_distance`` Å (names both atoms and the distance).
    """
    pos = s.positions
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise InputError(f"{name}: positions must have shape [n_atoms, 3], got {pos.shape}")
    if pos.shape[0] == 0:
        raise InputError(f"{name}: the structure has zero atoms")
    if s.species.shape != (pos.shape[0],):
        raise InputError(f"{name}: {s.species.shape[0]} species for {pos.shape[0]} atoms")
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name}: atom {i} has a non-finite position {pos[i].tolist()}")
    if (s.species < 1).any() or (s.species > 118).any():
        i = int(np.flatnonzero((s.species < 1) | (s.species > 118))[0])
        raise InputError(f"{name}: atom {i} has an invalid atomic number {int(s.species[i])}")
    cell = s.cell
    if not np.isfinite(cell).all():
        raise InputError(f"{name}: the cell has non-finite entries {cell.tolist()}")
    if s.pbc.any():
        periodic_rows = cell[s.pbc]
        # Rank of the periodic lattice vectors must equal their number; the volume of the
        # parallelepiped they span must not vanish (relative to their lengths).
        lengths = np.linalg.norm(periodic_rows, axis=1)
        if (lengths < 1e-8).any():
            axis = int(np.flatnonzero(s.pbc)[int(np.argmin(lengths))])
            raise InputError(
                f"{name}: periodic along axis {'abc'[axis]} but that lattice vector is zero"
            )
        sv = np.linalg.svd(periodic_rows / lengths[:, None], compute_uv=False)
        if sv.min() < 1e-6:
            raise InputError(
                f"{name}: the cell is singular (its periodic lattice vectors are linearly "
                f"dependent): {cell.tolist()}"
            )
    _check_min_distance(s, name=name, min_distance=min_distance)


def _check_min_distance(s: Structure, *, name: str, min_distance: float) -> None:
    from atomshard.graph._neighbors import raw_pairs

    i, j, _shift, d = raw_pairs(s.positions, s.cell, s.pbc, cutoff=min_distance)
    if len(d):
        k = int(np.argmin(d))
        a, b = sorted((int(i[k]), int(j[k])))
        if a == b:
            raise InputError(
                f"{name}: atom {a} is {d[k]:.4f} Å from its own periodic image "
                f"(cell too small: {s.cell.tolist()})"
            )
        raise InputError(
            f"{name}: atoms {a} and {b} are only {d[k]:.4f} Å apart "
            f"(minimum allowed {min_distance} Å)"
        )
