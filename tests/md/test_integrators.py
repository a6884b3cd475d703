"""Integrators: NVE conservation, thermostat targets, determinism, resumable runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomshard.errors import InputError
from atomshard.md import (
    MDConfig,
    SerialForceField,
    langevin_init,
    langevin_step,
    maxwell_boltzmann,
    nose_hoover_conserved,
    nose_hoover_init,
    nose_hoover_step,
    nve_init,
    nve_step,
    run_md,
    state_from_ase,
)
from atomshard.md.noise import gaussian_noise
from atomshard.md.outputs import read_thermo


def test_nve_conserves_energy(argon, lj):
    state = state_from_ase(argon)
    maxwell_boltzmann(state, 60.0, seed=1)
    ff = SerialForceField(lj, skin=1.0)
    nve_init(state, ff)
    e0 = state.energy + state.kinetic_energy()
    energies = []
    for _ in range(300):
        nve_step(state, ff, dt=4.0)
        energies.append(state.energy + state.kinetic_energy())
    drift = max(abs(e - e0) for e in energies) / state.n_atoms
    assert drift < 2e-5, f"NVE energy drift {drift:.2e} eV/atom"
    assert 1 <= ff.n_builds < 300  # the skin saves rebuilds


def test_maxwell_boltzmann_exact_temperature_and_zero_momentum(argon):
    state = state_from_ase(argon)
    maxwell_boltzmann(state, 123.0, seed=5)
    assert state.temperature() == pytest.approx(123.0, rel=1e-12)
    momentum = (state.masses[:, None] * state.velocities).sum(0)
    assert float(momentum.abs().max()) < 1e-12


def test_noise_is_keyed_by_atom_not_by_order():
    ids = np.arange(50)
    full = gaussian_noise(7, 3, ids)
    perm = np.random.default_rng(0).permutation(50)
    assert np.array_equal(gaussian_noise(7, 3, ids[perm]), full[perm])
    assert not np.array_equal(gaussian_noise(7, 4, ids), full)
    big = gaussian_noise(1, 0, np.arange(200_000))
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1.0) < 0.01


def test_langevin_reaches_target_temperature(argon, lj):
    state = state_from_ase(argon)
    maxwell_boltzmann(state, 20.0, seed=2)
    ff = SerialForceField(lj, skin=1.0)
    langevin_init(state, ff)
    temps = []
    for step in range(600):
        langevin_step(state, ff, dt=5.0, temperature=80.0, friction=0.02, seed=11)
        if step >= 200:
            temps.append(state.temperature())
    assert np.mean(temps) == pytest.approx(80.0, rel=0.12)


def test_nose_hoover_conserves_extended_energy_and_thermostats(argon, lj):
    state = state_from_ase(argon)
    maxwell_boltzmann(state, 20.0, seed=4)
    ff = SerialForceField(lj, skin=1.0)
    nose_hoover_init(state, ff, temperature=70.0, tdamp=200.0)
    h0 = nose_hoover_conserved(state, temperature=70.0, tdamp=200.0)
    hs, temps = [], []
    for _ in range(800):
        nose_hoover_step(state, ff, dt=4.0, temperature=70.0, tdamp=200.0)
        hs.append(nose_hoover_conserved(state, temperature=70.0, tdamp=200.0))
        temps.append(state.temperature())
    assert max(abs(h - h0) for h in hs) / state.n_atoms < 5e-5
    assert np.mean(temps[200:]) == pytest.approx(70.0, rel=0.2)


def test_bad_timestep_and_temperature_are_rejected():
    with pytest.raises(InputError, match="dt"):
        MDConfig(dt=0.0)
    with pytest.raises(InputError, match="dt"):
        MDConfig(dt=-1.0)
    with pytest.raises(InputError, match="steps"):
        MDConfig(steps=-5)
    with pytest.raises(InputError, match="ensemble"):
        MDConfig(ensemble="berendsen")


@pytest.mark.parametrize("ensemble", ["nve", "langevin", "nose-hoover", "npt"])
def test_resume_is_bit_identical(tmp_path, argon, lj, ensemble):
    structure = tmp_path / "ar.extxyz"
    argon.write(structure)
    common = dict(
        structure=str(structure),
        model="unused",
        ensemble=ensemble,
        dt=4.0,
        temperature=60.0,
        traj_every=3,
        restart_every=5,
        skin=0.5,
    )
    straight = MDConfig(steps=16, output=str(tmp_path / "straight"), **common)
    run_md(straight, model=lj, progress=False)

    parts = MDConfig(steps=10, output=str(tmp_path / "parts"), **common)
    run_md(parts, model=lj, progress=False)
    # simulate a kill after step 10: more steps were logged than the last restart covers
    with open(tmp_path / "parts" / "thermo.csv", "a") as handle:
        handle.write("garbage that a killed run left behind\n")
    resumed = MDConfig(steps=16, output=str(tmp_path / "parts"), **common)
    run_md(resumed, model=lj, progress=False, resume=True)

    for name in ("thermo.csv", "trajectory.extxyz"):
        a = (tmp_path / "straight" / name).read_bytes()
        b = (tmp_path / "parts" / name).read_bytes()
        assert a == b, name
    assert (tmp_path / "parts" / "thermo.png").stat().st_size > 1000
    log = read_thermo(tmp_path / "parts" / "thermo.csv")
    assert log["step"].tolist() == list(range(17))


def test_refuses_to_overwrite_a_run(tmp_path, argon, lj):
    structure = tmp_path / "ar.extxyz"
    argon.write(structure)
    cfg = MDConfig(structure=str(structure), steps=2, output=str(tmp_path / "run"))
    run_md(cfg, model=lj, progress=False)
    with pytest.raises(InputError, match="already holds a run"):
        run_md(cfg, model=lj, progress=False)


def test_forces_are_float64_and_stress_present(argon, lj):
    state = state_from_ase(argon)
    SerialForceField(lj)(state)
    assert state.forces.dtype == torch.float64
    assert state.stress is not None and state.pressure_gpa() is not None
