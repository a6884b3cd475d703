"""Amorphous-like HfO2 cells for partitioning and scaling benchmarks.

Method: **random packing with minimum distances, by vectorised overlap removal** (no
interatomic potential, no melt-quench). Atoms (Hf:O = 1:2) are placed uniformly at
random in a cubic periodic cell of the requested number density; then, repeatedly, every
pair closer than its species' minimum distance is pushed apart symmetrically along the
pair vector (all pairs at once, one vesin neighbour list per sweep), until no pair
overlaps. The result has the density and the disorder the benchmark needs (uniform
density, so ~14.4 M directed edges at 12 Å for the 24,000-atom 2x2x2 tiling, close to
the Hamiltonian seed's 14.5 M) but no chemically realistic short-range order; it is a
workload for graph partitioning, not a structure for physics.
"""

from __future__ import annotations

import numpy as np

from atomshard.errors import InputError

#: Minimum distances, Å, for (Hf-Hf, Hf-O, O-O); below the bond lengths of m-HfO2
#: (Hf-O 2.03-2.25 Å, O-O >= 2.5 Å, Hf-Hf >= 3.3 Å) so random packing converges fast.
MIN_DISTANCES: dict[str, float] = {"Hf-Hf": 3.0, "Hf-O": 1.9, "O-O": 2.3}

HF, O = 72, 8


def amorphous_hfo2(
    n_formula_units: int = 1000,
    *,
    density: float = 0.083,
    seed: int = 0,
    min_distances: dict[str, float] | None = None,
    max_sweeps: int = 500,
):
    """A random-packed HfO2 cell (cubic, periodic) as :class:`ase.Atoms`.

    Args:
        n_formula_units: HfO2 units; ``3 * n_formula_units`` atoms (default 3,000).
        density: number density, atoms/Å³ (default 0.083, amorphous HfO2).
        seed: random seed; the same arguments always give the same cell.
        min_distances: Å per species pair (keys as in :data:`MIN_DISTANCES`).
        max_sweeps: overlap-removal sweeps before giving up.

    Returns:
        ``ase.Atoms`` with Hf atoms first, then O; cell edge ``(3 n / density)^(1/3)`` Å.

    Raises:
        InputError: on non-positive arguments, or when the packing does not converge
            (the minimum distances are too large for the density).
    """
    from ase import Atoms

    from atomshard.graph import raw_pairs

    if n_formula_units < 1:
        raise InputError(f"n_formula_units must be >= 1, got {n_formula_units}")
    if not density > 0:
        raise InputError(f"density must be positive (atoms/Å³), got {density}")
    dmin = {**MIN_DISTANCES, **(min_distances or {})}
    if set(dmin) != set(MIN_DISTANCES) or not all(v >= 0 for v in dmin.values()):
        raise InputError(
            f"min_distances must give non-negative {sorted(MIN_DISTANCES)}, got {dmin}"
        )
    n = 3 * n_formula_units
    length = (n / density) ** (1.0 / 3.0)
    cell = np.eye(3) * length
    species = np.concatenate([np.full(n_formula_units, HF), np.full(2 * n_formula_units, O)])
    is_hf = species == HF
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.0, length, (n, 3))
    reach = max(dmin.values())
    table = np.array([[dmin["O-O"], dmin["Hf-O"]], [dmin["Hf-O"], dmin["Hf-Hf"]]])
    pbc = np.array([True, True, True])
    for _ in range(max_sweeps):
        if reach == 0:
            break
        i, j, shifts, d = raw_pairs(pos, cell, pbc, cutoff=reach)
        vec = pos[j] + shifts @ cell - pos[i]
        need = table[is_hf[i].astype(int), is_hf[j].astype(int)]
        over = d < need
        if not over.any():
            break
        i, vec, d, need = i[over], vec[over], d[over], need[over]
        # Full list: each pair appears twice, so each side moves half the overlap. Pairs
        # are pushed to 5 % beyond their minimum distance, otherwise the overlaps only
        # shrink geometrically and never reach zero; coincident atoms get a random
        # direction.
        unit = np.where(d[:, None] > 1e-9, vec / np.maximum(d, 1e-9)[:, None], 0.0)
        zero = d <= 1e-9
        if zero.any():
            r = rng.normal(size=(int(zero.sum()), 3))
            unit[zero] = r / np.linalg.norm(r, axis=1, keepdims=True)
        step = -0.5 * (1.05 * need - d)[:, None] * unit
        moves = np.zeros((n, 3))
        for axis in range(3):
            moves[:, axis] = np.bincount(i, weights=step[:, axis], minlength=n)
        pos = np.mod(pos + moves, length)
    else:
        raise InputError(
            f"random packing did not converge in {max_sweeps} sweeps: minimum distances "
            f"{dmin} are too large for density {density} atoms/Å³"
        )
    return Atoms(numbers=species, positions=pos, cell=cell, pbc=True)


def tile(atoms, repeat: tuple[int, int, int] = (2, 2, 2)):
    """``atoms`` repeated ``repeat`` times along the cell vectors (a new ``ase.Atoms``)."""
    reps = tuple(int(r) for r in repeat)
    if len(reps) != 3 or any(r < 1 for r in reps):
        raise InputError(f"tiling repeat must be three positive integers, got {repeat}")
    return atoms.repeat(reps)


__all__ = ["MIN_DISTANCES", "amorphous_hfo2", "tile"]
