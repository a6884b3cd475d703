"""``atomshard md --ranks N``: the serial MD driver's run, spread over ranks.

Same configuration, ensembles and output files as :func:`atomshard.md.run_md`
(``config.yaml``, ``trajectory.extxyz``, ``thermo.csv``, ``thermo.png``); rank 0 writes
them. Every rank computes the thermo row (the kinetic energy is a sum over ranks);
trajectory frames are gathered on rank 0 when written.

Restarts: every ``restart_every`` steps and at the end the state is gathered on rank 0
in global atom-id order and written atomically as ``restart.pt`` in the serial driver's
format (:func:`atomshard.md.driver.save_restart`) plus one extra entry, ``reference``:
the positions and cell of the last neighbour-list rebuild. A serial run resumes such a
file as its own (it ignores the extra entry); a distributed run with any number of ranks
resumes it, rebuilding its plans on the reference positions, so with the same rank count
and partitioner it makes the same partition, edge order and rebuild decisions as the
interrupted run and continues bit-identically. A run with local rebuilds (grid, Low-NN)
also stores its set-up regions there (``reference["regions"]``, plain lists), so the
resumed run keeps the same regions instead of re-partitioning.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomshard.comm import DEFAULT_TIMEOUT_S, Communicator, env_world, init_communicator, launch
from atomshard.errors import InputError
from atomshard.md.config import MDConfig
from atomshard.md.driver import MDResult
from atomshard.md.state import MDState
from atomshard.runtime._api import load_potential
from atomshard.runtime._md import DistributedForceField, DistributedMDState, distributed_state
from atomshard.runtime._partition import PartitionSpec


def gather_state(state: DistributedMDState, comm: Communicator) -> MDState | None:
    """The whole system as one :class:`MDState` on rank 0 (None elsewhere), in atom-id order."""
    mine = {
        "ids": state.atom_ids.cpu().numpy(),
        "positions": state.positions.detach().cpu().numpy(),
        "velocities": state.velocities.cpu().numpy(),
        "masses": state.masses.cpu().numpy(),
        "species": state.species.cpu().numpy(),
        "forces": state.forces.detach().cpu().numpy(),
    }
    gathered = comm.gather_objects(mine) if comm.world_size > 1 else [mine]
    if gathered is None:
        return None
    ids = np.concatenate([g["ids"] for g in gathered])

    def cat(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        out = np.zeros((len(ids), *shape), dtype=gathered[0][key].dtype)
        out[ids] = np.concatenate([g[key].reshape(-1, *shape) for g in gathered])
        return torch.as_tensor(out)

    return MDState(
        positions=cat("positions", (3,)),
        velocities=cat("velocities", (3,)),
        masses=cat("masses", ()),
        species=cat("species", ()),
        atom_ids=torch.arange(len(ids), dtype=torch.int64),
        cell=state.cell.clone(),
        pbc=state.pbc.clone(),
        forces=cat("forces", (3,)),
        energy=state.energy,
        stress=state.stress,
        step=state.step,
        time=state.time,
        thermostat={k: v.clone() for k, v in state.thermostat.items()},
    )


def gather_rows(comm: Communicator, ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
    """Per-rank ``[n_owned, 3]`` rows keyed by global ``ids``, in id order on rank 0."""
    mine = (ids.cpu().numpy(), rows.detach().cpu().numpy())
    gathered = comm.gather_objects(mine) if comm.world_size > 1 else [mine]
    if gathered is None:
        return None
    all_ids = np.concatenate([g[0] for g in gathered])
    out = np.zeros((len(all_ids), 3))
    out[all_ids] = np.concatenate([g[1].reshape(-1, 3) for g in gathered])
    return torch.as_tensor(out)


def md_rank(
    comm: Communicator,
    config: MDConfig,
    *,
    partition: PartitionSpec,
    transport: str,
    progress: bool,
    resume: bool = False,
    model: Any = None,
    rebuild: str = "auto",
) -> dict[str, Any] | None:
    """One rank of a distributed ``md`` run; rank 0 writes the outputs and restart files.

    ``model`` (a :class:`~atomshard.models.base.Potential`) replaces ``config.model``,
    as in the serial :func:`atomshard.md.run_md`. ``rebuild`` is passed to
    :class:`DistributedForceField` (``"gather"`` forces the gather-on-rank-0 rebuilds).
    """
    from atomshard.md.driver import (
        _initial_state,
        load_restart,
        load_restart_extra,
        save_restart,
    )
    from atomshard.md.ensemble import conserved_energy, ensemble_init, ensemble_step
    from atomshard.md.outputs import extxyz_frame, open_logs, plot_thermo, thermo_row
    from atomshard.utils.config import config_from_dict
    from atomshard.utils.files import atomic_write

    root = comm.rank == 0
    out = Path(config.output)
    restart_path = out / "restart.pt"
    full: MDState | None = None
    offsets: dict[str, int] | None = None
    reference: torch.Tensor | None = None
    regions: dict[str, Any] | None = None
    header: Any = None
    if root:
        try:
            if resume:
                full, stored, offsets = load_restart(restart_path, "cpu")
                stored_cfg = config_from_dict(MDConfig, stored, where=str(restart_path))
                # as serially: only the length of the run may change on resume
                config = dataclasses.replace(stored_cfg, steps=config.steps, output=config.output)
                extra = load_restart_extra(restart_path, "reference")
                if extra is not None and torch.equal(extra["cell"], full.cell):
                    reference = extra["positions"]
                    regions = extra.get("regions")
            elif out.exists() and (out / "thermo.csv").exists():
                raise InputError(
                    f"output folder {str(out)!r} already holds a run; pass --resume to continue "
                    f"it or choose another --output"
                )
            else:
                full = _initial_state(config, "cpu")
            header = (config, full.step, full.time, full.thermostat, reference is not None)
        except Exception as exc:  # every rank raises it, none waits for a broadcast
            header = exc
    if comm.world_size > 1:
        header = comm.broadcast_object(header)
    if isinstance(header, Exception):
        raise header
    config, step, time_fs, thermostat, has_reference = header
    dtype = getattr(torch, config.dtype) if config.dtype else None
    potential = load_potential(config.model if model is None else model, dtype=dtype)
    potential = potential.to(comm.device)
    state = distributed_state(full, comm)
    full = None  # rank 0 keeps no copy of the whole system
    state.step, state.time = int(step), float(time_fs)
    state.thermostat = {k: v.clone() for k, v in thermostat.items()}
    ff = DistributedForceField(
        potential, comm, skin=config.skin, partition=partition, transport=transport, rebuild=rebuild
    )
    if has_reference:
        ff.restore(state, reference if root else torch.zeros(0, 3, dtype=torch.float64), regions)
    reference = regions = None
    ensemble_init(state, ff, config)
    traj = thermo = None
    if root:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "config.yaml") as handle:
            handle.write(config.to_yaml())
        traj, thermo = open_logs(out, offsets)

    def conserved() -> float:
        return conserved_energy(state, config)

    def record() -> None:
        if config.log_every and state.step % config.log_every == 0:
            row = thermo_row(state, conserved())  # collective: every rank computes it
            if thermo is not None:
                thermo.write(row)
        if config.traj_every and state.step % config.traj_every == 0:
            frame = gather_state(state, comm)
            if traj is not None and frame is not None:
                traj.write(extxyz_frame(frame))

    def checkpoint() -> None:
        """Collective: gather the state and the rebuild reference; rank 0 writes restart.pt."""
        whole = gather_state(state, comm)
        ref = ff.reference_positions
        ref_rows = gather_rows(comm, state.atom_ids, state.positions if ref is None else ref)
        if whole is None or traj is None or thermo is None or ref_rows is None:
            return
        save_restart(
            restart_path,
            whole,
            config,
            {"trajectory": traj.offset(), "thermo": thermo.offset()},
            extra={
                "reference": {
                    "positions": ref_rows,
                    "cell": state.cell.detach().cpu(),
                    "regions": ff.regions_dict,
                }
            },
        )

    if not resume:
        record()
        checkpoint()
    start_step = state.step
    bar = None
    if progress and root:
        from tqdm import tqdm

        bar = tqdm(
            total=config.steps,
            initial=start_step,
            unit="step",
            mininterval=1.0,
            dynamic_ncols=True,
            desc=f"md {config.ensemble} on {comm.world_size} ranks",
        )
    t0 = time.perf_counter()
    while state.step < config.steps:
        ensemble_step(state, ff, config)
        record()
        if config.restart_every and state.step % config.restart_every == 0:
            checkpoint()
        if bar is not None:
            bar.update(1)
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    checkpoint()
    temperature = state.temperature()
    n_migrated = comm.broadcast_object(ff.n_migrated)
    if not root:
        return None
    assert traj is not None and thermo is not None
    traj.close()
    thermo.close()
    plot_thermo(
        out / "thermo.csv",
        out / "thermo.png",
        title=f"{config.structure}, {config.model}, {config.ensemble}, {comm.world_size} ranks",
    )
    done = state.step - start_step
    rate = done / wall if wall > 0 else 0.0
    return {
        "result": MDResult(
            output=out,
            steps=done,
            n_atoms=state.n_global or state.n_atoms,
            wall_seconds=wall,
            steps_per_second=rate,
            ns_per_day=rate * config.dt * 86400e-6,
            neighbor_builds=ff.n_builds,
            final_temperature=temperature,
            final_energy=state.energy,
        ),
        "n_migrated": n_migrated,
    }


def run_md_distributed(
    config: MDConfig,
    *,
    n_ranks: int,
    partition: PartitionSpec = "auto",
    transport: str = "auto",
    resume: bool = False,
    progress: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[MDResult, int] | None:
    """Run ``config`` on ``n_ranks`` local ranks, or on the ranks of a torchrun job.

    Returns:
        ``(result, n_migrated)`` on rank 0; None on other torchrun ranks.
    """
    world = env_world()
    if world is not None and world[1] > 1:
        if n_ranks != 1:
            raise InputError("--ranks spawns local processes; under torchrun/srun leave it at 1")
        comm = init_communicator(timeout_s=timeout_s)
        try:
            got = md_rank(
                comm,
                config,
                partition=partition,
                transport=transport,
                progress=progress,
                resume=resume,
            )
        finally:
            comm.close()
    else:
        if n_ranks < 1:
            raise InputError(f"--ranks must be at least 1, got {n_ranks}")
        got = launch(
            md_rank,
            n_ranks,
            config,
            partition=partition,
            transport=transport,
            progress=progress,
            resume=resume,
            timeout_s=timeout_s,
        )[0]
    if got is None:
        return None
    return got["result"], got["n_migrated"]
