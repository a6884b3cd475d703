"""Local rebuilds (no rank holds the whole system) == the gather path.

Plans built by messages between ranks (:mod:`atomshard.runtime._local_rebuild`) must be
the plans :func:`build_halo_plans` makes from the whole system with the same owners;
distributed MD with local rebuilds must match serial MD and hold no per-atom array as
long as the system.
"""

from __future__ import annotations

import warnings

import ase
import numpy as np
import pytest

from atomshard.comm import LocalGroup, launch
from atomshard.graph import neighbor_list
from atomshard.partition import (
    REGION_PARTITIONERS,
    PartitionWarning,
    Regions,
    as_partition_input,
    build_halo_plans,
)
from atomshard.runtime._local_rebuild import OwnedAtoms, build_local_part, migrate
from tests.distributed._toy_potential import ToyMPNN
from tests.distributed.distributed_cases import quartz, slab, tiny_triclinic
from tests.distributed.md_cases import md_frames
from tests.distributed.test_md import DT, EVERY, SKIN, _serial, _start

pytestmark = pytest.mark.distributed
CUTOFF = 4.0


def _low_slab() -> ase.Atoms:
    """A slab filling the lower third of a periodic cell: grid bricks above it are empty."""
    atoms = quartz((2, 2, 1), seed=2)
    atoms.cell[2] *= 3.5
    atoms.translate([0.0, 0.0, 1.0])  # no atom wraps to the top of the cell
    return atoms


CASES = {
    "quartz": lambda: quartz((2, 2, 2), seed=4),
    "triclinic": tiny_triclinic,
    "slab": slab,
    "low slab": _low_slab,
}


def _regions(atoms: ase.Atoms, method: str, n_parts: int) -> Regions:
    pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
    src, dst, shifts = neighbor_list(pos, cell, pbc, cutoff=CUTOFF)
    graph = as_partition_input(
        {"positions": pos, "cell": cell, "pbc": pbc, "src": src, "dst": dst}
        | {"shifts": shifts, "cutoff": CUTOFF}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartitionWarning)
        return REGION_PARTITIONERS[method](graph, n_parts)[1]


def _build_on_ranks(comm, *, cases=None):
    """Rank side: rank 0's atoms migrate to their regions; each rank builds its part."""
    cases = comm.broadcast_object(cases)
    out = []
    for atoms, regions_dict in cases:
        regions = Regions.from_dict(regions_dict)
        n = len(atoms)
        mine = np.arange(n) if comm.rank == 0 else np.zeros(0, np.int64)
        owned = OwnedAtoms(
            ids=mine,
            positions=atoms.positions[mine],
            current=None,
            velocities=np.zeros((len(mine), 3)),
            masses=np.ones(len(mine)),
            species=atoms.numbers[mine].astype(np.int64),
        )
        owned, _ = migrate(comm, regions, owned)
        built = build_local_part(
            comm,
            regions,
            owned.ids,
            owned.positions,
            owned.species,
            regions.cell,
            regions.pbc,
            CUTOFF,
            n,
        )
        out.append((built.part.plan.to_dict(), built.part.positions, built.peak_rows))
    return out


@pytest.mark.parametrize("n_ranks", [2, 3, 4])
def test_local_plans_equal_gather_plans(n_ranks):
    cases, names = [], []
    for name, make in CASES.items():
        for method in ("grid", "lownn"):
            atoms = make()
            cases.append((atoms, _regions(atoms, method, n_ranks).to_dict()))
            names.append(f"{name}/{method}/{n_ranks} ranks")
    with LocalGroup(n_ranks, timeout_s=60, threads_per_rank=1) as group:
        results = group.run(_build_on_ranks, root_only={"cases": cases})
    empty_ranks = 0
    for c, ((atoms, regions_dict), name) in enumerate(zip(cases, names)):
        regions = Regions.from_dict(regions_dict)
        part = regions.owner(atoms.positions)
        src, dst, shifts = neighbor_list(
            atoms.positions, atoms.cell.array, atoms.pbc, cutoff=CUTOFF
        )
        want = build_halo_plans(src, dst, shifts, len(atoms), part, n_ranks)
        for r in range(n_ranks):
            got, positions, _ = results[r][c]
            ref = want[r].to_dict()
            for key in ("n_owned", "local_to_global", "send", "recv", "src", "dst", "shifts"):
                assert got[key] == ref[key], f"{name}: rank {r} {key} differs"
            assert np.array_equal(positions, atoms.positions[ref["local_to_global"]]), name
            empty_ranks += got["n_owned"] == 0
    assert empty_ranks > 0  # the triclinic pair and the low slab leave ranks empty


def _md(n_ranks, partition, atoms, n_steps, **kw):
    model = ToyMPNN(cutoff=3.0, n_layers=2)
    (res, *_) = launch(
        md_frames,
        n_ranks,
        model,
        n_steps=n_steps,
        dt=DT,
        skin=SKIN,
        partition=partition,
        every=EVERY,
        threads_per_rank=1,
        root_only={"atoms": atoms},
        **kw,
    )
    return model, res


def _low_slab_start() -> ase.Atoms:
    from atomshard.md.state import maxwell_boltzmann, state_from_ase

    state = state_from_ase(_low_slab())
    maxwell_boltzmann(state, 1500.0, seed=2)
    return state.to_ase()


@pytest.mark.parametrize(
    ("partition", "start", "integrator"),
    [
        ("lownn", _start, "nve"),
        ("grid", _low_slab_start, "nve"),
        ("lownn", _start, "langevin"),
        ("grid", _start, "nose-hoover"),
    ],
    ids=["lownn-nve", "grid-nve-slab-with-empty-rank", "lownn-langevin", "grid-nose-hoover"],
)
def test_md_with_local_rebuilds_matches_serial(partition, start, integrator):
    """2 ranks, 40 steps; on the slab the grid brick above it owns no atoms."""
    atoms = start()
    thermostat = {"temperature": 1500.0, "friction": 0.02, "tdamp": 20.0, "seed": 5}
    model, res = _md(2, partition, atoms, 40, integrator=integrator, **thermostat)
    ref, ref_builds = _serial(model, atoms, 40, integrator)
    assert res["local_rebuilds"]
    assert np.max(np.abs(res["positions"] - ref)) <= 1e-6
    assert res["n_builds"] == ref_builds > 2
    if start is _start:
        assert res["n_migrated"] > 0
    else:
        assert res["min_owned"] == 0


def _big_start() -> ase.Atoms:
    from atomshard.md.state import maxwell_boltzmann, state_from_ase

    state = state_from_ase(quartz((4, 4, 2), seed=3))
    maxwell_boltzmann(state, 2500.0, seed=8)
    return state.to_ase()


@pytest.mark.slow
def test_no_rank_holds_global_arrays_during_rebuilds():
    """4 ranks, 288 atoms: rebuilds with migration; every per-atom array < n_atoms rows."""
    atoms = _big_start()
    _, res = _md(4, "lownn", atoms, 60)
    assert res["local_rebuilds"] and res["n_builds"] > 3 and res["n_migrated"] > 0
    assert 0 < res["peak_rows"] < len(atoms)


@pytest.mark.parametrize("partition", ["lownn", "grid"])
def test_resume_with_local_rebuilds_is_bit_identical(tmp_path, partition):
    """The stored regions make a resumed run rebuild exactly as the interrupted one."""
    import shutil

    import ase.io
    import torch

    from atomshard.md import md_on_rank
    from atomshard.md.state import maxwell_boltzmann, state_from_ase
    from tests.distributed.test_md_restart import STEPS, _config

    state = state_from_ase(quartz((2, 2, 1), seed=3))
    maxwell_boltzmann(state, 1500.0, seed=7)
    ase.io.write(tmp_path / "start.extxyz", state.to_ase())
    model = ToyMPNN(cutoff=3.0, n_layers=2)

    def run(group, name, steps, resume=False):
        (got, _) = group.run(
            md_on_rank, _config(tmp_path, name, steps), partition=partition, transport="auto",
            progress=False, resume=resume, model=model,
        )  # fmt: skip
        return got

    with LocalGroup(2, timeout_s=60, threads_per_rank=1) as group:
        straight = run(group, "straight", STEPS)
        run(group, "parts", STEPS // 2 + 3)
        stored = torch.load(tmp_path / "parts" / "restart.pt", weights_only=True)
        assert stored["reference"]["regions"]["kind"] == partition
        shutil.copytree(tmp_path / "parts", tmp_path / "three")
        run(group, "parts", STEPS, resume=True)
    assert straight.neighbor_builds > 2 and straight.n_migrated > 0
    for name in ("thermo.csv", "trajectory.extxyz"):
        assert (tmp_path / "straight" / name).read_bytes() == (
            tmp_path / "parts" / name
        ).read_bytes()
    # 3 ranks cannot use 2-rank regions: they partition the reference positions again
    launch(
        md_on_rank, 3, _config(tmp_path, "three", STEPS), partition=partition, transport="auto",
        progress=False, resume=True, model=model, threads_per_rank=1,
    )  # fmt: skip
    want = ase.io.read(tmp_path / "straight" / "trajectory.extxyz", index=":")
    got = ase.io.read(tmp_path / "three" / "trajectory.extxyz", index=":")
    assert len(got) == len(want)
    assert max(np.max(np.abs(a.positions - b.positions)) for a, b in zip(got, want)) <= 1e-9


def test_local_rebuild_needs_a_spatial_partition():
    from atomshard.comm import NullCommunicator
    from atomshard.errors import InputError
    from atomshard.md import DistributedForceField

    model = ToyMPNN(cutoff=3.0)
    for partition in ("metis", np.zeros(3, np.int64)):
        with pytest.raises(InputError, match="local rebuilds need a spatial partition"):
            DistributedForceField(model, NullCommunicator(), partition=partition, rebuild="local")
    with pytest.raises(InputError, match="rebuild must be one of"):
        DistributedForceField(model, NullCommunicator(), rebuild="sometimes")
