"""Distributed == serial for the Allegro potential (random weights, float64, ZBL on).

Quartz, a cell shorter than the cutoff (many images) and a slab, on 2, 3 and 4 ranks with
the Low-NN, METIS and grid partitions and one partition with an empty rank: energy,
per-atom energies, forces and stress equal the serial ones to 1e-10 relative. Allegro
is strictly local: one evaluation exchanges positions forward and their gradients
backward, nothing else (checked with the exchange profiler). A short NVE run on 2 ranks
follows the serial trajectory.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomshard.comm import launch
from atomshard.md.forcefield import SerialForceField
from atomshard.md.integrators import nve_init, nve_step
from atomshard.md.state import maxwell_boltzmann, state_from_ase
from atomshard.models.allegro import AllegroConfig, AllegroPotential
from atomshard.models.checkpoint import save_checkpoint
from tests.distributed.distributed_cases import (
    build_model,
    partitions,
    quartz,
    rel,
    run_profiled,
    serial,
    tiny_triclinic,
)
from tests.distributed.md_cases import md_frames

pytestmark = pytest.mark.distributed
TOL = 1e-10


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    """An atomshard checkpoint of a small random Allegro model (its path: the rank-side
    ``--model`` string)."""
    torch.manual_seed(7)
    config = AllegroConfig(
        species=(8, 14), cutoff=3.5, l_max=2, n_layers=2, n_scalar=8, n_tensor=4,
        embed_dim=8, two_body_hidden=(16,), allegro_hidden=(16,), readout_hidden=(8,),
        avg_num_neighbors=8.0, energy_shift=(-2.0, -4.0), dtype="float64",
    )  # fmt: skip
    path = tmp_path_factory.mktemp("allegro") / "allegro.pt"
    model = AllegroPotential(config)
    save_checkpoint(path, model, model_type="allegro", config=config)
    return str(path)


def _structures():
    small_slab = quartz((1, 1, 1), seed=2)
    small_slab.center(vacuum=5.0, axis=2)
    return {"quartz": quartz((2, 1, 1)), "triclinic": tiny_triclinic(), "slab": small_slab}


@pytest.mark.parametrize("n_ranks", [2, 3, 4])
def test_allegro_distributed_equals_serial(groups, spec, n_ranks):
    cases = []
    for name, atoms in _structures().items():
        for method in ("lownn", "metis", "grid"):
            cases.append((f"{name}/{method}/{n_ranks}", atoms, method))
        cases.append((f"{name}/empty/{n_ranks}", atoms, partitions(atoms, n_ranks)["empty"]))
    results = groups(n_ranks).run(run_profiled, spec, root_only={"cases": cases})
    model = build_model(spec)
    refs: dict[int, dict] = {}
    for c, (name, atoms, _) in enumerate(cases):
        if id(atoms) not in refs:
            refs[id(atoms)] = serial(model, atoms)
        ref = refs[id(atoms)]
        assert np.abs(ref["forces"]).max() > 1e-2, "a test with zero forces cannot fail"
        energy, stress, energies, forces, _ = results[0][c]
        assert all(per_rank[c][0] == energy for per_rank in results), name
        assert rel(energy, ref["energy"]) <= TOL, name
        assert rel(energies, ref["energies"]) <= TOL, name
        assert rel(forces, ref["forces"]) <= TOL, name
        assert rel(stress, ref["stress"]) <= TOL, name
        # strictly local: positions out (3 columns) and their gradients back, once each
        for per_rank in results:
            assert per_rank[c][4] == [("forward", 3), ("backward", 3)], name


def test_allegro_distributed_md_equals_serial(spec):
    atoms = quartz((2, 1, 1))
    state = state_from_ase(atoms)
    maxwell_boltzmann(state, 300.0, seed=3)
    start = state.to_ase()
    n_steps, dt, skin, every = 8, 0.5, 0.1, 4  # small skin: rebuilds
    model = build_model(spec)
    ref_state = state_from_ase(start)
    ff = SerialForceField(model, skin=skin)
    nve_init(ref_state, ff)
    ref = [ref_state.positions.numpy().copy()]
    for _ in range(n_steps):
        nve_step(ref_state, ff, dt=dt)
        if ref_state.step % every == 0:
            ref.append(ref_state.positions.numpy().copy())
    (res, *_) = launch(
        md_frames, 2, spec, n_steps=n_steps, dt=dt, skin=skin, partition="lownn",
        every=every, dtype=None, threads_per_rank=1, root_only={"atoms": start},
    )  # fmt: skip
    positions = res["positions"]
    assert positions.shape == np.stack(ref).shape
    assert np.abs(positions - np.stack(ref)).max() <= 1e-9
    assert np.abs(positions[-1] - positions[0]).max() > 1e-3  # atoms moved
    assert abs(res["total_energy"][-1] - res["total_energy"][0]) < 1e-2
