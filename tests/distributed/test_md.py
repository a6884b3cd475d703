"""Distributed MD == serial MD: 200 float64 NVE steps with rebuilds and atom migration."""

from __future__ import annotations

import numpy as np
import pytest

from atomshard.comm import launch
from atomshard.md.forcefield import SerialForceField
from atomshard.md.integrators import (
    langevin_init,
    langevin_step,
    nose_hoover_init,
    nose_hoover_step,
    nve_init,
    nve_step,
)
from atomshard.md.state import maxwell_boltzmann, state_from_ase
from tests.distributed._toy_potential import ToyMPNN
from tests.distributed.distributed_cases import quartz, x_slabs
from tests.distributed.md_cases import md_frames

pytestmark = pytest.mark.distributed
DT, SKIN, EVERY = 1.0, 1.0, 20


def _start():
    atoms = quartz((2, 1, 1), seed=3)
    state = state_from_ase(atoms)
    maxwell_boltzmann(state, 1500.0, seed=7)
    return state.to_ase()


def _serial(model, atoms, n_steps, integrator="nve"):
    state = state_from_ase(atoms)
    ff = SerialForceField(model, skin=SKIN)
    if integrator == "nve":
        nve_init(state, ff)
    elif integrator == "langevin":
        langevin_init(state, ff)
    else:
        nose_hoover_init(state, ff, temperature=1500.0, tdamp=20.0, chain=3)
    out = [state.positions.numpy().copy()]
    for _ in range(n_steps):
        if integrator == "nve":
            nve_step(state, ff, dt=DT)
        elif integrator == "langevin":
            langevin_step(state, ff, dt=DT, temperature=1500.0, friction=0.02, seed=5)
        else:
            nose_hoover_step(state, ff, dt=DT, temperature=1500.0, tdamp=20.0)
        if state.step % EVERY == 0:
            out.append(state.positions.numpy().copy())
    return np.stack(out), ff.n_builds


@pytest.mark.parametrize(("n_ranks", "n_steps"), [(2, 200), (3, 100)])
def test_nve_trajectory_matches_serial_with_migration(n_ranks, n_steps):
    model = ToyMPNN(cutoff=3.0, n_layers=2)
    atoms = _start()
    ref, ref_builds = _serial(model, atoms, n_steps)
    (res, *_) = launch(
        md_frames,
        n_ranks,
        model,
        n_steps=n_steps,
        dt=DT,
        skin=SKIN,
        partition=x_slabs,
        every=EVERY,
        threads_per_rank=1,
        root_only={"atoms": atoms},
    )
    assert res["positions"].shape == ref.shape
    assert np.max(np.abs(res["positions"] - ref)) <= 1e-6
    assert np.max(np.abs(res["positions"][-1] - ref[0])) > 0.3  # atoms really moved
    assert res["n_builds"] == ref_builds > 2  # same rebuild decisions as serial
    assert res["n_migrated"] > 0  # atoms crossed slab boundaries and changed owner
    drift = np.ptp(res["total_energy"])
    assert drift < 1e-2 * max(1.0, abs(res["total_energy"][0]))


@pytest.mark.parametrize("integrator", ["langevin", "nose-hoover"])
def test_thermostats_match_serial(integrator):
    """Langevin noise is keyed by atom id; Nosé–Hoover uses the all-reduced kinetic energy."""
    model = ToyMPNN(cutoff=3.0, n_layers=2)
    atoms = _start()
    ref, _ = _serial(model, atoms, 100, integrator)
    (res, *_) = launch(
        md_frames,
        2,
        model,
        n_steps=100,
        dt=DT,
        skin=SKIN,
        partition=x_slabs,
        integrator=integrator,
        temperature=1500.0,
        friction=0.02,
        tdamp=20.0,
        seed=5,
        every=EVERY,
        threads_per_rank=1,
        root_only={"atoms": atoms},
    )
    assert np.max(np.abs(res["positions"] - ref)) <= 1e-6
    assert res["n_migrated"] > 0
