"""Distributed == serial for the Behler-Parrinello (n2p2) potential, float64.

The H2O_RPBE-D3 potential (cutoff 12 Bohr = 6.35 Å) on a small periodic water box and on
a cell smaller than the cutoff (every atom sees many images of every other), with the
Low-NN and METIS partitions on 2 and 3 ranks; a short NVE run equals the serial one. The
model is strictly local: one evaluation exchanges positions forward and their gradients
backward, nothing else (checked with the exchange profiler).
"""

from __future__ import annotations

import ase
import numpy as np
import pytest

from atomshard.comm import launch
from atomshard.io.n2p2_data import read_n2p2_data
from atomshard.md.forcefield import SerialForceField
from atomshard.md.integrators import nve_init, nve_step
from atomshard.md.state import maxwell_boltzmann, state_from_ase
from tests.conftest import shared_data
from tests.distributed.distributed_cases import build_model, rel, run_profiled, serial
from tests.distributed.md_cases import md_frames

pytestmark = pytest.mark.distributed
TOL = 1e-10


def _folder():
    return shared_data("n2p2", "H2O_RPBE-D3")


def _model_spec() -> str:
    return f"n2p2:{_folder()}"


def _molecules(box: ase.Atoms, oxygens: np.ndarray, cell: np.ndarray) -> ase.Atoms:
    """Whole molecules (O H H order in the file) around their oxygens, in ``cell``."""
    idx = np.concatenate([[o, o + 1, o + 2] for o in oxygens])
    # hydrogens next to their own oxygen (the file's box wraps them independently)
    vec = box.get_distances(np.repeat(oxygens, 3), idx, mic=True, vector=True)
    pos = box.positions[np.repeat(oxygens, 3)] + vec
    return ase.Atoms(box.numbers[idx], positions=pos, cell=cell, pbc=True)


def water_box() -> ase.Atoms:
    """Molecules whose oxygen lies in a 9 Å cube of the n2p2 box, in a 9 Å periodic cell
    (clashes with the new images removed): 64 atoms, cutoff 6.35 Å > half the cell."""
    box = read_n2p2_data(_folder() / "input.data")[0]
    side = 9.0
    ox = np.arange(0, len(box), 3)
    frac = box.positions[ox] - box.positions[ox].min(0)
    inside = ox[(frac < side).all(1)]
    atoms = _molecules(box, inside, np.eye(3) * side)
    keep: list[int] = []
    for m in range(len(inside)):  # greedy: drop a molecule that clashes with kept ones
        trial = [*keep, m]
        sub = atoms[np.concatenate([[3 * k, 3 * k + 1, 3 * k + 2] for k in trial])]
        d = sub.get_all_distances(mic=True)
        same = np.repeat(np.arange(len(trial)), 3)
        d[same[:, None] == same[None, :]] = np.inf
        if d.min() > 1.5:
            keep = trial
    return atoms[np.concatenate([[3 * k, 3 * k + 1, 3 * k + 2] for k in keep])]


def tiny_water() -> ase.Atoms:
    """Two molecules in a triclinic cell of ~4.4 Å edges: many images within the cutoff."""
    box = read_n2p2_data(_folder() / "input.data")[0]
    d = box.get_distances(0, np.arange(0, len(box), 3), mic=True)
    pair = np.arange(0, len(box), 3)[np.argsort(d)[:2]]
    cell = np.array([[4.6, 0.0, 0.0], [0.6, 4.4, 0.0], [0.4, -0.5, 4.5]])
    atoms = _molecules(box, pair, cell)
    atoms.wrap()
    return atoms


@pytest.fixture(scope="module")
def structures() -> dict[str, ase.Atoms]:
    out = {"water": water_box(), "tiny": tiny_water()}
    for atoms in out.values():
        d = atoms.get_all_distances(mic=True)
        assert d[np.triu_indices(len(atoms), 1)].min() > 0.9  # no unphysical overlaps
    return out


@pytest.mark.parametrize("n_ranks", [2, 3])
def test_bpnn_distributed_equals_serial(groups, structures, n_ranks):
    spec = _model_spec()
    cases = [
        (f"{name}/{method}/{n_ranks}", atoms, method)
        for name, atoms in structures.items()
        for method in ("lownn", "metis")
    ]
    results = groups(n_ranks).run(run_profiled, spec, root_only={"cases": cases})
    model = build_model(spec)
    for c, (name, atoms, _) in enumerate(cases):
        ref = serial(model, atoms)
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


def test_bpnn_distributed_md_equals_serial(structures):
    atoms = structures["water"]
    state = state_from_ase(atoms)
    maxwell_boltzmann(state, 300.0, seed=3)
    start = state.to_ase()
    n_steps, dt, skin, every = 8, 0.5, 0.1, 4  # small skin: rebuilds
    model = build_model(_model_spec())
    ref_state = state_from_ase(start)
    ff = SerialForceField(model, skin=skin)
    nve_init(ref_state, ff)
    ref = [ref_state.positions.numpy().copy()]
    for _ in range(n_steps):
        nve_step(ref_state, ff, dt=dt)
        if ref_state.step % every == 0:
            ref.append(ref_state.positions.numpy().copy())
    (res, *_) = launch(
        md_frames,
        2,
        _model_spec(),
        n_steps=n_steps,
        dt=dt,
        skin=skin,
        partition="lownn",
        every=every,
        dtype=None,
        threads_per_rank=1,
        root_only={"atoms": start},
    )
    positions = res["positions"]
    assert positions.shape == np.stack(ref).shape
    assert np.abs(positions - np.stack(ref)).max() <= 1e-9
    assert np.abs(positions[-1] - positions[0]).max() > 1e-2  # atoms moved
    assert res["n_builds"] == ff.n_builds > 1  # same neighbour-list rebuilds as serial
    assert abs(res["total_energy"][-1] - res["total_energy"][0]) < 1e-2
