"""Block-by-block evaluation on ranks (``--block-atoms`` of a distributed run).

When a rank's part exceeds the limit, every rank grows its part to the model's whole
receptive field (``deepen``) and evaluates it block by block. Checked against the serial
whole-graph evaluation of a 3-layer message-passing model in float64: energy, per-atom
forces and stress at round-off, on a periodic cell and a slab with slab, random and
empty-rank partitions on 2 and 3 ranks, and an MD run with rebuilds and migrations that
follows the serial trajectory. (A cell whose every block is the whole cell cannot be
split: block mode is for parts larger than the receptive field, as the limit test says.)
"""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

from atomshard.comm import RankFailure, gather_by_id, run_on_ranks
from atomshard.md import MDConfig, run_md, run_md_on_ranks
from atomshard.md.distributed import DistributedForceField, distributed_state
from atomshard.md.state import state_from_ase
from tests.distributed.distributed_cases import (
    partitions,
    quartz,
    random_nequip,
    rel,
    serial,
    slab,
)

pytestmark = pytest.mark.distributed


_MODEL: list = []


def short_model():
    """3 message-passing layers with a 2 Å cutoff (Si–O bonds only): a block's receptive
    field is a few dozen atoms, so a 72-atom cell splits into many blocks. float64."""
    if not _MODEL:
        _MODEL.append(random_nequip(cutoff=2.0))
    return _MODEL[0]


def _evaluate_in_blocks(comm, atoms, part, max_atoms):
    """Rank side: one force call of a DistributedForceField in block mode; rank 0 gets
    energy, stress, the rows of every rank's deep part, and forces by id."""
    model = short_model()
    state = distributed_state(state_from_ase(atoms) if comm.rank == 0 else None, comm)
    field = DistributedForceField(
        model, comm, partition=part, stress=True, skin=0.3, max_atoms=max_atoms
    )
    field(state)
    assert field.deep is not None, "the limit should have switched block mode on"
    deep = field.deep.deep
    assert field.local is not None
    rows = np.array([[deep.n_local, field.local.plan.n_local, deep.plan.n_owned]], np.float64)
    sizes = gather_by_id(comm, np.array([comm.rank]), rows=rows)
    got = gather_by_id(comm, state.atom_ids.numpy(), forces=state.forces.numpy())
    if comm.rank != 0:
        return None
    return {
        "energy": state.energy,
        "stress": None if state.stress is None else state.stress.numpy(),
        "forces": got["forces"],
        "rows": sizes["rows"],  # per rank: deep rows, one-shell rows, owned
    }


CASES = [
    ("quartz-slabs", quartz(), "slabs", 2),
    ("slab-random", slab(), "random", 2),
    ("quartz-empty-rank", quartz(), "empty", 3),
]


@pytest.mark.parametrize("name,atoms,split,n_ranks", CASES, ids=[c[0] for c in CASES])
def test_block_mode_on_ranks_equals_serial(name, atoms, split, n_ranks):
    ref = serial(short_model(), atoms)
    part = partitions(atoms, n_ranks)[split]
    got = run_on_ranks(
        _evaluate_in_blocks, n_ranks, atoms, part, 30, timeout_s=120,
        threads_per_rank=1,
    )  # fmt: skip
    assert rel(got["energy"], ref["energy"]) < 1e-10
    assert np.max(np.abs(got["forces"] - ref["forces"])) < 1e-10
    if ref["stress"] is not None:
        assert rel(got["stress"], ref["stress"]) < 1e-10
    # a rank with atoms holds its receptive field: more than the one-shell part, each atom once
    for deep_rows, shell_rows, owned in got["rows"]:
        assert deep_rows == shell_rows == 0 if owned == 0 else shell_rows < deep_rows <= len(atoms)


def test_too_small_a_limit_says_so():
    atoms = quartz()
    part = partitions(atoms, 2)["slabs"]
    with pytest.raises(RankFailure, match=r"blocks of at most 3 atoms") as failure:
        run_on_ranks(_evaluate_in_blocks, 2, atoms, part, 3, timeout_s=120, threads_per_rank=1)
    assert "CommError" not in str(failure.value)  # every rank says why, none times out


def test_md_in_blocks_on_ranks_follows_serial(tmp_path):
    """NVE with rebuilds and migrations: 2 ranks in block mode == serial whole graph."""
    atoms = quartz((3, 2, 2), seed=5)
    atoms.rattle(0.1, seed=6)
    ase.io.write(tmp_path / "start.extxyz", atoms)
    model = short_model()
    base = dict(
        structure=str(tmp_path / "start.extxyz"), ensemble="nve", steps=16, dt=2.0,
        temperature=2000.0, traj_every=8, restart_every=0, skin=0.2, seed=1,
    )  # fmt: skip
    ref = run_md(
        MDConfig(**base, output=str(tmp_path / "serial"), block_atoms="off"),
        model=model,
        progress=False,
    )
    got = run_md_on_ranks(
        MDConfig(**base, output=str(tmp_path / "ranks"), block_atoms=50),
        2,
        model=model,
        partition="lownn",
        progress=False,
        threads_per_rank=1,
        timeout_s=120,
    )
    assert ref is not None and got is not None and got.n_ranks == 2
    a = ase.io.read(tmp_path / "serial" / "trajectory.extxyz", index=":")
    b = ase.io.read(tmp_path / "ranks" / "trajectory.extxyz", index=":")
    assert len(a) == len(b) >= 2
    for x, y in zip(a, b):
        assert np.max(np.abs(x.positions - y.positions)) <= 1e-8


def test_eval_on_ranks_in_blocks_equals_serial():
    """``atomshard eval --ranks 2 --block-atoms N``'s library call: frames evaluated block by
    block on 2 ranks give the serial energies, per-atom energies, forces and stress."""
    from atomshard.runtime import evaluate_distributed

    frames = [quartz(seed=7), slab()]
    model = short_model()
    out = evaluate_distributed(
        model, frames, 2, partition="lownn", max_atoms="30", threads_per_rank=1, timeout_s=120
    )
    assert out is not None
    for atoms, res in zip(frames, out["frames"], strict=True):
        ref = serial(model, atoms)
        assert rel(res.energy, ref["energy"]) < 1e-10
        assert np.max(np.abs(res.energies - ref["energies"])) < 1e-10
        assert np.max(np.abs(res.forces - ref["forces"])) < 1e-10
        if ref["stress"] is not None:
            assert rel(res.stress, ref["stress"]) < 1e-10
