"""The one MD driver on several ranks: momentum removal, observers, SIGTERM, --block-atoms
limits (block mode itself: test_blocks_on_ranks.py),
and SIGTERM to ``atomshard md --ranks 2`` — each against the serial run where one exists."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import ase.io
import numpy as np
import pytest
import torch

from atomshard.comm import RankFailure
from atomshard.md import MDConfig, Observer, maxwell_boltzmann, run_md, run_md_on_ranks
from atomshard.md import state_from_ase as from_ase
from atomshard.md.outputs import read_thermo
from atomshard.models.pair import LennardJones

pytestmark = pytest.mark.distributed


def _argon_cluster():
    from ase.lattice.cubic import FaceCenteredCubic

    atoms = FaceCenteredCubic("Ar", latticeconstant=5.26, size=(3, 3, 2))
    atoms.rattle(0.05, seed=3)
    atoms.pbc = False
    state = from_ase(atoms)
    maxwell_boltzmann(state, 60.0, seed=4)
    return state.to_ase()


def x_halves(structure, src, dst, shifts, n_parts):
    """Slabs by Cartesian x (the cluster has no cell to take fractions of)."""
    x = structure.positions[:, 0]
    edges = np.quantile(x, np.linspace(0, 1, n_parts + 1)[1:-1])
    return np.searchsorted(edges, x).astype(np.int64)


def _lj():
    return LennardJones(epsilon=0.0104, sigma=3.40, cutoff=7.0)


def _config(tmp_path, name, **kw):
    base = dict(
        structure=str(tmp_path / "start.extxyz"), ensemble="langevin", steps=12, dt=4.0,
        temperature=60.0, friction=0.05, zero_momentum=4, traj_every=4, restart_every=0,
        skin=0.5, output=str(tmp_path / name),
    )  # fmt: skip
    return MDConfig(**{**base, **kw})


def test_zero_momentum_on_two_ranks_equals_serial(tmp_path):
    """Linear and angular momentum removal sums over ranks: the trajectory is the serial one."""
    ase.io.write(tmp_path / "start.extxyz", _argon_cluster())
    serial = run_md(_config(tmp_path, "serial"), model=_lj(), progress=False)
    ranks = run_md_on_ranks(
        _config(tmp_path, "ranks"), 2, model=_lj(), partition=x_halves, progress=False,
        threads_per_rank=1, timeout_s=60,
    )  # fmt: skip
    assert serial is not None and ranks is not None and ranks.n_ranks == 2
    a = ase.io.read(tmp_path / "serial" / "trajectory.extxyz", index=":")
    b = ase.io.read(tmp_path / "ranks" / "trajectory.extxyz", index=":")
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert np.max(np.abs(x.positions - y.positions)) <= 1e-9
        assert np.max(np.abs(x.get_velocities() - y.get_velocities())) <= 1e-9
    last = b[-1]
    p = (last.get_masses()[:, None] * last.get_velocities()).sum(0)
    scale = float((last.get_masses()[:, None] * np.abs(last.get_velocities())).sum())
    assert np.max(np.abs(p)) < 1e-6 * scale  # removed at 12 after Langevin's kicks (to file digits)


def _stop_on_rank_1(state, comm):
    if comm.rank == 1 and state.step == 6:
        os.kill(os.getpid(), signal.SIGTERM)


def _count_atoms(state, comm):
    n = torch.tensor([float(state.n_atoms)], dtype=torch.float64)
    assert int(comm.all_reduce_sum(n, what="observer count")[0]) == 72


def test_sigterm_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    ase.io.write(tmp_path / "start.extxyz", _argon_cluster())
    observers = [
        Observer(_stop_on_rank_1, all_ranks=True),
        Observer(_count_atoms, every=3, all_ranks=True),  # collectives inside an observer
    ]
    got = run_md_on_ranks(
        _config(tmp_path, "cut", steps=20), 2, model=_lj(), partition=x_halves,
        progress=False, threads_per_rank=1, timeout_s=60, observers=observers,
    )  # fmt: skip
    assert got is not None and got.interrupted and got.steps == 6
    assert torch.load(tmp_path / "cut" / "restart.pt", weights_only=True)["step"] == 6
    assert read_thermo(tmp_path / "cut" / "thermo.csv")["step"][-1] == 6


def test_block_atoms_too_small_for_one_atom_says_so_on_every_rank(tmp_path):
    ase.io.write(tmp_path / "start.extxyz", _argon_cluster())
    with pytest.raises(RankFailure, match=r"blocks of at most 5 atoms") as failure:
        run_md_on_ranks(
            _config(tmp_path, "small", block_atoms=5), 2, model=_lj(), partition=x_halves,
            progress=False, threads_per_rank=1, timeout_s=60,
        )  # fmt: skip
    assert "rank 0: InputError" in str(failure.value)  # every rank says why, none times out
    assert "rank 1: InputError" in str(failure.value)
    fits = run_md_on_ranks(
        _config(tmp_path, "fits", steps=2, block_atoms=72), 2, model=_lj(), partition=x_halves,
        progress=False, threads_per_rank=1, timeout_s=60,
    )  # fmt: skip
    assert fits is not None and fits.steps == 2


def test_sigterm_to_md_ranks_command_writes_restart_and_exits_143(tmp_path):
    """A scheduler signals the launching process: the ranks finish a step, write, exit."""
    from atomshard.models.checkpoint import save_checkpoint

    model = _lj()
    ckpt = tmp_path / "lj.pt"
    save_checkpoint(ckpt, model, model_type="lennard-jones", config=model.config)
    atoms = _argon_cluster()
    atoms.pbc = True
    atoms.cell = [15.78, 15.78, 10.52]
    ase.io.write(tmp_path / "start.extxyz", atoms)
    out = tmp_path / "run"
    argv = [
        sys.executable, "-m", "atomshard", "md", "--model", str(ckpt),
        "--structure", str(tmp_path / "start.extxyz"), "--ensemble", "nve", "--dt", "2",
        "--steps", "100000", "--restart-every", "0", "--traj-every", "0", "--ranks", "2",
        "--threads", "1", "--no-progress", "-o", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            thermo = out / "thermo.csv"
            if thermo.exists() and thermo.read_text().count("\n") > 4:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert "stopped by SIGTERM" in stdout and "--resume" in stdout
    step = torch.load(out / "restart.pt", weights_only=True)["step"]
    assert 3 <= step < 100000 and read_thermo(out / "thermo.csv")["step"][-1] == step
    # the resumed run also checks a process-wide option under --ranks: the allocator
    # re-executes the command, and the spawned ranks inherit it
    done = subprocess.run(
        [*argv[:3], "--allocator", "glibc", *argv[3:12], "--steps", str(step + 3), *argv[14:],
         "--resume"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_thermo(out / "thermo.csv")["step"][-1] == step + 3


def _argon_crystal():
    from ase.lattice.cubic import FaceCenteredCubic

    atoms = FaceCenteredCubic("Ar", latticeconstant=5.30, size=(3, 3, 3))
    atoms.rattle(0.05, seed=5)
    state = from_ase(atoms)
    maxwell_boltzmann(state, 400.0, seed=6)
    return state.to_ase()


@pytest.mark.parametrize(
    ("n_ranks", "partition", "barostat"),
    [(2, "lownn", "iso"), (2, "x_slabs", "tri"), (3, "grid", "aniso")],
)
def test_npt_on_ranks_equals_serial(tmp_path, n_ranks, partition, barostat):
    """200 NPT steps with the cell moving, rebuilds and migrations: the serial trajectory.

    Low-NN and grid keep their regions (fractional boxes follow the cell); x_slabs
    re-partitions on rank 0 at every rebuild."""
    from tests.distributed.distributed_cases import x_slabs

    ase.io.write(tmp_path / "start.extxyz", _argon_crystal())
    config = dict(
        ensemble="npt", steps=200, dt=4.0, temperature=400.0, pressure=0.5, pdamp=300.0,
        tdamp=100.0, barostat=barostat, skin=0.4, traj_every=50, zero_momentum=0,
    )  # fmt: skip
    serial = run_md(_config(tmp_path, "serial", **config), model=_lj(), progress=False)
    spec = x_slabs if partition == "x_slabs" else partition
    ranks = run_md_on_ranks(
        _config(tmp_path, "ranks", **config), n_ranks, model=_lj(), partition=spec,
        progress=False, threads_per_rank=1, timeout_s=60,
    )  # fmt: skip
    assert serial is not None and ranks is not None
    assert ranks.neighbor_builds == serial.neighbor_builds > 2 and ranks.n_migrated > 0
    a = ase.io.read(tmp_path / "serial" / "trajectory.extxyz", index=":")
    b = ase.io.read(tmp_path / "ranks" / "trajectory.extxyz", index=":")
    assert len(a) == len(b) == 5
    for x, y in zip(a, b):
        assert np.max(np.abs(x.positions - y.positions)) <= 1e-6
        assert np.max(np.abs(x.cell.array - y.cell.array)) <= 1e-9
    assert abs(a[-1].get_volume() - a[0].get_volume()) > 1.0  # the cell really moved
