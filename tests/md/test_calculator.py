"""The ASE calculator equals a direct call and follows ASE's contract."""

from __future__ import annotations

import ase
import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.md.calculator import AtomshardCalculator
from atomshard.models import compute_properties


def test_calculator_equals_direct_call(argon, lj):
    atoms = argon.copy()
    atoms.calc = AtomshardCalculator(lj)
    direct = compute_properties(lj, AtomicGraph.from_ase(argon, lj.cutoff))
    assert atoms.get_potential_energy() == pytest.approx(float(direct.energy), abs=1e-12)
    assert np.allclose(atoms.get_forces(), direct.forces.numpy(), atol=1e-12)
    assert np.allclose(atoms.get_potential_energies(), direct.energies.numpy(), atol=1e-12)
    s = direct.stress.numpy()
    voigt = [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]
    assert np.allclose(atoms.get_stress(), voigt, atol=1e-12)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy())


def test_stress_matches_ase_numerical_stress(argon, lj):
    atoms = argon.copy()
    atoms.calc = AtomshardCalculator(lj)
    from ase.calculators.fd import calculate_numerical_stress

    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.allclose(atoms.get_stress(), numerical, atol=1e-7)


def test_no_stress_without_full_periodicity(lj):
    dimer = ase.Atoms("Ar2", positions=[[0, 0, 0], [0, 0, 3.8]])
    dimer.calc = AtomshardCalculator(lj)
    assert dimer.get_potential_energy() < 0
    with pytest.raises(PropertyNotImplementedError):
        dimer.get_stress()


def test_unknown_element_is_named(lj):
    atoms = ase.Atoms("ArNe", positions=[[0, 0, 0], [0, 0, 3.5]])
    atoms.calc = AtomshardCalculator(lj)
    with pytest.raises(InputError, match=r"atom 1 is Ne \(Z=10\)"):
        atoms.get_potential_energy()


def test_skin_reuses_the_list_between_calls(argon, lj):
    calc = AtomshardCalculator(lj, skin=1.0)
    atoms = argon.copy()
    atoms.calc = calc
    energies = []
    for _ in range(5):
        atoms.positions += 0.01
        energies.append(atoms.get_potential_energy())
    assert calc.neighbors.n_builds == 1
    fresh = argon.copy()
    fresh.positions += 0.05
    fresh.calc = AtomshardCalculator(lj)
    assert energies[-1] == pytest.approx(fresh.get_potential_energy(), abs=1e-12)
    assert torch.get_default_dtype() == torch.float32  # the calculator changed no globals
