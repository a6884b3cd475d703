"""Built-in structures are what they claim to be; files are read with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from atomshard.errors import InputError
from atomshard.io import builtin_structure, read_structures


def test_quartz_is_alpha_quartz():
    atoms = builtin_structure("quartz")
    assert len(atoms) == 9 and atoms.get_chemical_formula() == "O6Si3"
    i, d = neighbor_list("id", atoms, 1.8)
    coordination = np.bincount(i, minlength=len(atoms))
    si = atoms.numbers == 14
    assert (coordination[si] == 4).all() and (coordination[~si] == 2).all()
    assert 1.59 < d.min() < 1.62  # Si-O bond length, Å
    density = atoms.get_masses().sum() * 1.66053906660 / atoms.get_volume()  # g/cm3
    assert density == pytest.approx(2.65, abs=0.03)
    assert len(builtin_structure("quartz", (8, 8, 8))) == 4608


def test_hfo2_and_silicon():
    hfo2 = builtin_structure("hfo2")
    assert hfo2.get_chemical_formula() == "Hf4O8"
    si = builtin_structure("si")
    assert len(si) == 8
    i = neighbor_list("i", si, 2.5)
    assert (np.bincount(i) == 4).all()


def test_unknown_names_and_missing_files():
    with pytest.raises(InputError, match="does not exist"):
        read_structures("no-such-file.xyz")
    with pytest.raises(InputError, match="unknown built-in"):
        builtin_structure("diamond-ish")


def test_directory_is_not_a_structure(tmp_path):
    with pytest.raises(InputError, match="directory"):
        read_structures(tmp_path)
