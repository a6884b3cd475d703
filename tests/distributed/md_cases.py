"""The one MD driver run in memory, for distributed == serial trajectory tests.

:func:`md_frames` is a rank function (``launch(md_frames, n_ranks, model, ...,
root_only={"atoms": atoms})``): it runs :func:`atomshard.md.run_md` with no output folder,
a rank-0 observer that keeps the positions every ``every`` steps, and a
:class:`~atomshard.md.DistributedForceField` it holds a handle on for rebuild statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from atomshard.comm import Communicator
from atomshard.md import DistributedForceField, MDConfig, Observer, run_md
from atomshard.runtime import load_potential


def md_frames(
    comm: Communicator,
    model: Any,
    *,
    atoms: Any,
    n_steps: int,
    dt: float,
    skin: float = 1.0,
    partition: Any = "auto",
    integrator: str = "nve",
    temperature: float = 300.0,
    friction: float = 0.01,
    tdamp: float = 100.0,
    chain: int = 3,
    seed: int = 0,
    every: int = 10,
    stress: bool = False,
    dtype: torch.dtype | None = None,
    rebuild: str = "auto",
) -> dict[str, Any] | None:
    """Rank 0: ``{"steps", "positions" [n_frames, n_atoms, 3], "energy", "total_energy",
    "n_builds", "n_migrated", "local_rebuilds", "peak_rows", "min_owned"}``; None elsewhere."""
    # like the integrators called by hand: a start without velocities stays at rest
    moving = atoms is not None and bool(np.abs(atoms.get_velocities()).sum() > 0)
    config = MDConfig(
        init_temperature=None if moving or atoms is None else 0.0,
        ensemble=integrator,
        steps=n_steps,
        dt=dt,
        temperature=temperature,
        friction=friction,
        tdamp=tdamp,
        chain=chain,
        seed=seed,
        skin=skin,
        output=None,
        block_atoms="off",
    )
    potential = load_potential(model, dtype=dtype).to(comm.device)
    ff = DistributedForceField(
        potential, comm, skin=skin, partition=partition, stress=stress, rebuild=rebuild
    )
    frames: dict[str, list[Any]] = {"steps": [], "positions": [], "energy": [], "total": []}

    def keep(state):
        frames["steps"].append(state.step)
        frames["positions"].append(state.positions.numpy().copy())
        frames["energy"].append(state.energy)
        frames["total"].append(state.energy + state.kinetic_energy())

    run_md(
        config,
        comm=comm,
        force_field=ff,
        atoms=atoms,
        observers=[Observer(keep, every=every)],
        progress=False,
    )
    n_migrated = comm.broadcast_object(ff.n_migrated)
    fewest = -float(ff.min_owned or 0)
    stats = torch.tensor([float(ff.peak_rows), fewest], dtype=torch.float64)
    stats = comm.all_reduce_max(stats, what="rebuild statistics")
    if comm.rank != 0:
        return None
    return {
        "steps": frames["steps"],
        "positions": np.stack(frames["positions"]),
        "energy": frames["energy"],
        "total_energy": frames["total"],
        "n_builds": ff.n_builds,
        "n_migrated": n_migrated,
        "local_rebuilds": ff.regions is not None,
        "peak_rows": int(stats[0]),
        "min_owned": int(-stats[1]),
    }
