"""Amorphous-like HfO2 generator: composition, density, minimum distances, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from atomshard.errors import InputError
from atomshard.graph import raw_pairs
from atomshard.io.amorphous import MIN_DISTANCES, amorphous_hfo2, tile
from atomshard.io.structures import read_structures


def test_small_cell_has_composition_density_and_minimum_distances():
    atoms = amorphous_hfo2(100, seed=3)
    numbers = atoms.numbers
    assert len(atoms) == 300
    assert (numbers == 72).sum() == 100 and (numbers == 8).sum() == 200
    assert len(atoms) / atoms.get_volume() == pytest.approx(0.083, rel=1e-9)
    i, j, _, d = raw_pairs(atoms.positions, atoms.cell[:], atoms.pbc, cutoff=3.5)
    hf_i, hf_j = numbers[i] == 72, numbers[j] == 72
    need = np.where(
        hf_i & hf_j,
        MIN_DISTANCES["Hf-Hf"],
        np.where(hf_i | hf_j, MIN_DISTANCES["Hf-O"], MIN_DISTANCES["O-O"]),
    )
    assert np.all(d >= need)
    # disordered: not a lattice, so distances spread out
    assert np.std(d[d < 3.5]) > 0.3
    again = amorphous_hfo2(100, seed=3)
    np.testing.assert_array_equal(atoms.positions, again.positions)
    assert not np.array_equal(atoms.positions, amorphous_hfo2(100, seed=4).positions)


def test_builtin_and_tiling():
    (atoms,) = read_structures("a-hfo2")
    assert len(atoms) == 3000
    assert atoms.cell.lengths() == pytest.approx([33.063] * 3, abs=1e-3)
    big = tile(atoms, (2, 1, 1))
    assert len(big) == 6000
    np.testing.assert_allclose(big.cell[0], 2 * atoms.cell[0])


def test_bad_input():
    with pytest.raises(InputError, match="n_formula_units"):
        amorphous_hfo2(0)
    with pytest.raises(InputError, match="density"):
        amorphous_hfo2(10, density=-1.0)
    with pytest.raises(InputError, match="did not converge"):
        amorphous_hfo2(100, min_distances={"Hf-Hf": 6.0}, max_sweeps=5)
    with pytest.raises(InputError, match="three positive"):
        tile(amorphous_hfo2(10), (0, 1, 1))
