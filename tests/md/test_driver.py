"""The one MD driver, serially: observers, momentum removal, SIGTERM, runs without files."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from atomshard.comm import NullCommunicator
from atomshard.errors import InputError
from atomshard.md import MDConfig, Observer, maxwell_boltzmann, run_md, state_from_ase
from atomshard.md import zero_momentum as remove_momentum
from atomshard.md.outputs import read_thermo


def _momenta(state):
    m = state.masses[:, None]
    p = (m * state.velocities).sum(0)
    rel = state.positions - (m * state.positions).sum(0) / m.sum()
    ang = (m * torch.linalg.cross(rel, state.velocities)).sum(0)
    return float(p.abs().max()), float(ang.abs().max())


def test_zero_momentum_linear_always_angular_for_clusters(argon):
    periodic = state_from_ase(argon)
    cluster = argon.copy()
    cluster.pbc = False
    free = state_from_ase(cluster)
    for state in (periodic, free):
        generator = torch.Generator().manual_seed(1)
        state.velocities = torch.randn(state.n_atoms, 3, generator=generator, dtype=torch.float64)
        assert min(_momenta(state)) > 1.0  # the test starts with both momenta
    remove_momentum(periodic, NullCommunicator())
    remove_momentum(free, NullCommunicator())
    p, ang = _momenta(periodic)
    assert p < 1e-10 and ang > 1.0  # a periodic system keeps its (meaningless) L
    p, ang = _momenta(free)
    assert p < 1e-10 and ang < 1e-9


def test_observers_zero_momentum_and_no_files(tmp_path, monkeypatch, argon, lj):
    monkeypatch.chdir(tmp_path)
    cluster = argon.copy()
    cluster.pbc = False
    seen: dict[str, list] = {"root": [], "all": [], "momenta": []}

    def on_root(state):
        seen["root"].append(state.step)
        seen["momenta"].append(_momenta(state))

    def on_every_rank(state, comm):
        assert comm.world_size == 1
        seen["all"].append(state.step)

    config = MDConfig(
        ensemble="langevin", steps=12, dt=2.0, temperature=80.0, friction=0.05,
        zero_momentum=4, output=None, block_atoms="off",
    )  # fmt: skip
    result = run_md(
        config,
        model=lj,
        atoms=cluster,
        progress=False,
        observers=[Observer(on_root, every=4), Observer(on_every_rank, every=5, all_ranks=True)],
    )
    assert result is not None and result.output is None and result.steps == 12
    assert len(result.step_cpu_seconds) == 12 and all(c >= 0 for c in result.step_cpu_seconds)
    assert seen["root"] == [0, 4, 8, 12] and seen["all"] == [0, 5, 10]
    for p, ang in seen["momenta"][1:]:  # Langevin noise adds momentum; it is removed at 4, 8, 12
        assert p < 1e-10 and ang < 1e-9
    assert list(tmp_path.iterdir()) == []  # output=None writes nothing
    with pytest.raises(InputError, match="positive integer"):
        Observer(on_root, every=0)
    with pytest.raises(InputError, match="zero_momentum"):
        MDConfig(zero_momentum=-1)


def _config(tmp_path, name, steps):
    return MDConfig(
        structure=str(tmp_path / "start.extxyz"), ensemble="nose-hoover", steps=steps, dt=4.0,
        temperature=60.0, tdamp=40.0, traj_every=2, restart_every=5, output=str(tmp_path / name),
    )  # fmt: skip


def test_sigterm_finishes_the_step_writes_the_restart_and_resumes(tmp_path, argon, lj):
    import ase.io

    state = state_from_ase(argon)
    maxwell_boltzmann(state, 60.0, seed=2)
    ase.io.write(tmp_path / "start.extxyz", state.to_ase())

    def terminate_at_7(state):
        if state.step == 7:
            os.kill(os.getpid(), signal.SIGTERM)  # what a batch scheduler sends

    before = signal.getsignal(signal.SIGTERM)
    cut = run_md(
        _config(tmp_path, "cut", 12),
        model=lj,
        progress=False,
        observers=[Observer(terminate_at_7)],
    )
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is gone after the run
    assert cut is not None and cut.interrupted and cut.steps == 7
    stored = torch.load(tmp_path / "cut" / "restart.pt", weights_only=True)
    assert stored["step"] == 7  # the restart is of the finished step, not of step 5
    assert read_thermo(tmp_path / "cut" / "thermo.csv")["step"][-1] == 7
    resumed = run_md(_config(tmp_path, "cut", 12), model=lj, progress=False, resume=True)
    assert resumed is not None and not resumed.interrupted and resumed.steps == 5
    run_md(_config(tmp_path, "straight", 12), model=lj, progress=False)
    for name in ("thermo.csv", "trajectory.extxyz"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    assert np.isfinite(read_thermo(tmp_path / "cut" / "thermo.csv")["conserved_eV"]).all()


def test_bench_npt_smoke(tmp_path):
    """benchmarks/bench_npt.py runs (3 steps of SevenNet-0 quartz, NVT and NPT, 1 rank)."""
    import json

    from tests.bench_scripts import load_benchmark

    report = load_benchmark("bench_npt").main(
        ["--smoke", "--ranks", "1", "--out", str(tmp_path), "--threads", "1"]
    )
    assert set(report["steps_per_second"]) == {"nvt-1", "npt-1"}
    assert all(rate > 0 for rate in report["steps_per_second"].values())
    assert 2.0 < report["final_density_g_cm3"]["npt-1"] < 3.5  # quartz: 2.65 g/cm³
    assert json.loads((tmp_path / "bench_npt.json").read_text())["n_atoms"] == 9
    assert (tmp_path / "bench_npt.png").exists()
