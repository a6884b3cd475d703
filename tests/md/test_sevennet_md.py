"""MD with the real model: SevenNet-0 (converted from the installed sevenn wheel)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from atomshard.cli import main
from atomshard.graph import AtomicGraph
from atomshard.io import builtin_structure
from atomshard.md import SerialForceField, maxwell_boltzmann, nve_init, nve_step, state_from_ase
from atomshard.md.calculator import AtomshardCalculator
from atomshard.md.outputs import read_thermo
from atomshard.models import compute_properties

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sevenn") is None,
    reason="sevenn (source of the SevenNet-0 weights) is not installed; CI installs it",
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quartz-nvt.yaml"


@pytest.fixture(scope="module")
def sevennet0():
    from atomshard.models.resolve import resolve_model

    return resolve_model("sevennet-0")


@pytest.mark.timeout(2400)
def test_nve_drift_quartz_200fs(sevennet0):
    """Energy drift over 200 fs of 72-atom quartz at dt = 1 fs stays below 1e-4 eV/atom.

    Drift is the linear-fit slope of E_tot(t) times the run length: velocity Verlet's
    bounded O(dt²) oscillation (~1e-4 eV/atom here) is not drift.
    """
    atoms = builtin_structure("quartz", (2, 2, 2))
    state = state_from_ase(atoms)
    maxwell_boltzmann(state, 300.0, seed=0)
    ff = SerialForceField(sevennet0, skin=1.0)
    nve_init(state, ff)
    t, e = [0.0], [state.energy + state.kinetic_energy()]
    for _ in range(200):
        nve_step(state, ff, dt=1.0)
        t.append(state.time)
        e.append(state.energy + state.kinetic_energy())
    per_atom = (np.array(e) - e[0]) / state.n_atoms
    drift = abs(np.polyfit(t, per_atom, 1)[0]) * 200.0
    assert drift < 1e-4, f"drift {drift:.2e} eV/atom over 200 fs"
    assert np.abs(per_atom).max() < 1e-3


def test_calculator_equals_direct_call(sevennet0):
    atoms = builtin_structure("quartz", (1, 1, 2))
    atoms.rattle(0.05, seed=1)
    atoms.calc = AtomshardCalculator(sevennet0)
    direct = compute_properties(sevennet0, AtomicGraph.from_ase(atoms, sevennet0.cutoff))
    assert atoms.get_potential_energy() == pytest.approx(float(direct.energy), abs=1e-9)
    assert np.allclose(atoms.get_forces(), direct.forces.numpy(), atol=1e-9)
    s = direct.stress.numpy()
    assert np.allclose(atoms.get_stress()[:3], np.diag(s), atol=1e-9)


def test_readme_main_job_runs(tmp_path, monkeypatch):
    """README command 1's job, cut to 3 steps: leaves trajectory, log, plot and restart."""
    monkeypatch.chdir(tmp_path)
    assert main(["md", str(EXAMPLE), "--steps", "3", "--no-progress"]) == 0
    out = tmp_path / "atomshard-md-quartz"
    for name in ("trajectory.extxyz", "thermo.csv", "thermo.png", "restart.pt", "config.yaml"):
        assert (out / name).exists(), name
    log = read_thermo(out / "thermo.csv")
    assert log["step"].tolist() == [0, 1, 2, 3]
    assert np.isfinite(log["pressure_GPa"]).all()
