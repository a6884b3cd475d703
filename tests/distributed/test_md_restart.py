"""Distributed MD restarts: straight == half + resume (bytes) == serial; serial resumes them."""

from __future__ import annotations

import shutil

import ase.io
import numpy as np
import pytest

from atomshard.comm import LocalGroup, NullCommunicator
from atomshard.md import md_on_rank, run_md
from atomshard.md.config import MDConfig
from atomshard.md.state import maxwell_boltzmann, state_from_ase
from tests.distributed._toy_potential import ToyMPNN
from tests.distributed.distributed_cases import quartz, x_slabs

pytestmark = pytest.mark.distributed
STEPS = 40


@pytest.fixture(scope="module")
def group():
    with LocalGroup(2, timeout_s=60, threads_per_rank=1) as g:
        yield g


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("md_restart")
    state = state_from_ase(quartz((2, 1, 1), seed=3))
    maxwell_boltzmann(state, 1500.0, seed=7)
    ase.io.write(root / "start.extxyz", state.to_ase())
    return root, ToyMPNN(cutoff=3.0, n_layers=2)


def _config(root, name, steps, ensemble="nose-hoover"):
    return MDConfig(
        model="toy",
        structure=str(root / "start.extxyz"),
        ensemble=ensemble,
        steps=steps,
        dt=1.0,
        temperature=1500.0,
        tdamp=20.0,
        skin=0.6,
        traj_every=5,
        restart_every=10,
        output=str(root / name),
    )


def _run(group, cfg, model, *, resume=False):
    (got, _) = group.run(
        md_on_rank, cfg, partition=x_slabs, transport="auto", progress=False, resume=resume,
        model=model,
    )  # fmt: skip
    return got


def test_resume_is_bit_identical_and_serial_compatible(group, setup):
    root, model = setup
    straight = _run(group, _config(root, "straight", STEPS), model)
    assert straight.neighbor_builds > 2  # rebuilds (with migration) happen in the run
    _run(group, _config(root, "parts", STEPS // 2 + 3), model)  # killed after step 23 ...
    with open(root / "parts" / "thermo.csv", "a") as handle:
        handle.write("garbage that a killed run left behind\n")
    shutil.copytree(root / "parts", root / "serial_resume")
    shutil.copytree(root / "parts", root / "one_rank_resume")
    resumed = _run(group, _config(root, "parts", STEPS), model, resume=True)
    assert resumed.steps == STEPS - (STEPS // 2 + 3)
    for name in ("thermo.csv", "trajectory.extxyz"):
        assert (root / "straight" / name).read_bytes() == (root / "parts" / name).read_bytes()

    # the distributed restart file is a serial one: a serial run resumes it ...
    run_md(_config(root, "serial_resume", STEPS), model=model, progress=False, resume=True)
    # ... and so does a run on another number of ranks (here one)
    md_on_rank(
        NullCommunicator(),
        _config(root, "one_rank_resume", STEPS),
        partition=x_slabs,
        transport="auto",
        progress=False,
        resume=True,
        model=model,
    )
    run_md(_config(root, "serial", STEPS), model=model, progress=False)
    ref = ase.io.read(root / "serial" / "trajectory.extxyz", index=":")
    assert len(ref) == STEPS // 5 + 1
    for name in ("straight", "serial_resume", "one_rank_resume"):
        frames = ase.io.read(root / name / "trajectory.extxyz", index=":")
        assert len(frames) == len(ref), name
        for a, b in zip(frames, ref):
            assert np.max(np.abs(a.positions - b.positions)) <= 1e-9, name
    assert np.max(np.abs(ref[-1].positions - ref[0].positions)) > 0.3  # atoms really moved
