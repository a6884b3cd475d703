"""The one MD driver: the same loop on one process or on N ranks (serial = one rank).

:func:`run_md` runs (or resumes) the simulation an :class:`MDConfig` describes inside a
communicator's ranks — a :class:`~atomshard.comm.NullCommunicator` serially — and
:func:`run_md_on_ranks` starts those ranks (``--ranks N`` spawns local processes, under
torchrun/srun every process joins the job). Serially the force field is a
:class:`~atomshard.md.SerialForceField` (block-by-block evaluation of systems larger than
memory); on several ranks a :class:`~atomshard.md.DistributedForceField` (owned atoms per
rank, halo exchange, rebuilds with migration). Everything else — ensembles, momentum
removal, resume, restart files, thermo log, trajectory, plot, progress bar, observers,
SIGTERM — is this one loop.

Output folder layout (rank 0 writes it; ``output=None`` writes nothing):
    config.yaml        the run's configuration
    trajectory.extxyz  frames every ``traj_every`` steps (energy, stress, forces, velocities)
    thermo.csv         step, time, E_pot, E_kin, E_tot, conserved, T, P every ``log_every`` steps
    thermo.png         energies and temperature against time (written at the end)
    restart.pt         state every ``restart_every`` steps and at the end, written atomically

``resume=True`` reloads ``restart.pt``, cuts the trajectory and log back to what they
held when it was written, and continues: the result is bit-identical to an
uninterrupted run (with the same number of ranks and partitioner; any rank count can
resume any restart file).

On SIGTERM every rank finishes the current step, the restart file is written, and the
result says ``interrupted``; ``--resume`` continues the run.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atomshard.comm import (
    DEFAULT_TIMEOUT_S,
    Communicator,
    NullCommunicator,
    gather_by_id,
    root_call,
    run_on_ranks,
)
from atomshard.errors import InputError
from atomshard.md.config import MDConfig
from atomshard.md.distributed import DistributedForceField, distributed_state
from atomshard.md.ensemble import conserved_energy, converged, ensemble_init, ensemble_step
from atomshard.md.forcefield import SerialForceField
from atomshard.md.momentum import zero_momentum
from atomshard.md.observers import Observer
from atomshard.md.outputs import AppendLog, extxyz_frame, open_logs, plot_thermo, thermo_row
from atomshard.md.restart import gather_state, load_restart, save_restart
from atomshard.md.state import ForceField, MDState, maxwell_boltzmann, state_from_ase
from atomshard.runtime import PartitionSpec, load_potential
from atomshard.utils.config import config_from_dict
from atomshard.utils.dtypes import parse_dtype
from atomshard.utils.files import atomic_write
from atomshard.utils.signals import StopOnSigterm, forward_to_children


@dataclass
class MDResult:
    """What a finished (or interrupted) run reports, on rank 0."""

    output: Path | None
    steps: int
    n_atoms: int
    wall_seconds: float
    steps_per_second: float
    ns_per_day: float
    neighbor_builds: int
    final_temperature: float
    final_energy: float
    #: ranks the run used
    n_ranks: int = 1
    #: atoms that changed owner at neighbour-list rebuilds (distributed runs)
    n_migrated: int = 0
    #: True when SIGTERM stopped the run early (its restart file is written)
    interrupted: bool = False
    #: minimisers: whether the tolerances were met (None for MD)
    converged: bool | None = None
    #: median wall time of one step (the whole loop body, outputs included), s; robust
    #: to the slow first steps of a process and to the steps that rebuild or write files
    median_step_seconds: float = float("nan")
    #: this process's CPU seconds of each step (rank 0; all threads): unlike the wall
    #: time, it barely moves when other jobs share the cores
    step_cpu_seconds: tuple[float, ...] = ()


def _initial_state(config: MDConfig, device: str, atoms: Any = None) -> MDState:
    """The start of a new run: ``atoms`` (ASE) or ``config.structure``, with velocities."""
    if atoms is None:
        from atomshard.io import read_structures

        atoms = read_structures(config.structure, index=0, repeat=config.repeat)[0]
    state = state_from_ase(atoms, device=device)
    has_velocities = bool(state.velocities.abs().sum() > 0)
    t0 = config.init_temperature
    if t0 is None and not has_velocities:
        t0 = config.temperature
    if t0 is not None:
        maxwell_boltzmann(state, t0, seed=config.seed)
    return state


@dataclass
class _Start:
    """What rank 0 read; only ``header`` is sent to the other ranks."""

    state: MDState | None = None
    offsets: dict[str, int] | None = None
    reference: torch.Tensor | None = None
    regions: dict[str, Any] | None = None


def _read_start(
    config: MDConfig, resume: bool, atoms: Any, device: str, start: _Start
) -> tuple[Any, ...]:
    """Rank 0: the initial or resumed state into ``start``; returns the shared header."""
    out = None if config.output is None else Path(config.output)
    reference = None
    if resume:
        if out is None:
            raise InputError("cannot resume a run without an output folder")
        restart_path = out / "restart.pt"
        state, stored, extra = load_restart(restart_path, device)
        stored_cfg = config_from_dict(MDConfig, stored, where=str(restart_path))
        # Only the length of the run may change on resume; everything else is the stored run's.
        config = dataclasses.replace(stored_cfg, steps=config.steps, output=config.output)
        start.offsets = extra["offsets"]
        reference = extra["reference"]
        if reference is not None and torch.equal(reference["cell"], state.cell.cpu()):
            start.reference = reference["positions"]
            start.regions = reference.get("regions")
    else:
        if out is not None and (out / "thermo.csv").exists():
            raise InputError(
                f"output folder {str(out)!r} already holds a run; pass --resume to continue it "
                f"or choose another --output"
            )
        state = _initial_state(config, device, atoms)
    start.state = state
    return config, state.step, state.time, state.thermostat, start.reference is not None


def _force_field(
    config: MDConfig,
    comm: Communicator,
    state: MDState,
    model: Any,
    *,
    partition: PartitionSpec,
    transport: str,
    rebuild: str,
) -> ForceField:
    """The force field for this rank count: serial (blocks) or distributed (halo)."""
    potential = load_potential(
        config.model if model is None else model, dtype=parse_dtype(config.dtype)
    )
    potential = potential.to(config.device if comm.world_size == 1 else comm.device)
    if comm.world_size == 1:
        potential.check_species(state.species, name=config.structure)
        blocks = None if config.block_atoms == "off" else config.block_atoms
        return SerialForceField(potential, skin=config.skin, block_atoms=blocks)
    return DistributedForceField(
        potential,
        comm,
        skin=config.skin,
        partition=partition,
        transport=transport,
        rebuild=rebuild,
        max_atoms=None if config.block_atoms == "off" else config.block_atoms,
    )


def run_md(
    config: MDConfig,
    *,
    comm: Communicator | None = None,
    resume: bool = False,
    model: Any = None,
    force_field: ForceField | None = None,
    atoms: Any = None,
    partition: PartitionSpec = "auto",
    transport: str = "auto",
    rebuild: str = "auto",
    observers: Sequence[Observer] = (),
    progress: bool = True,
) -> MDResult | None:
    """Run (or resume) ``config`` on the ranks of ``comm``; see the module docstring.

    Collective: every rank of ``comm`` calls it with the same arguments (``atoms`` is read
    on rank 0 only).

    Args:
        config: the run (ensemble, steps, outputs...).
        comm: the ranks' communicator; None: this process alone.
        resume: continue the run in ``config.output`` from its restart file.
        model: a :class:`~atomshard.models.base.Potential` (or ``--model`` string) that
            replaces ``config.model``.
        force_field: replaces the force field the driver would build (advanced: a
            :class:`DistributedForceField` you keep a handle on, a custom serial one).
        atoms: ASE ``Atoms`` to start from instead of ``config.structure`` (rank 0).
        partition, transport, rebuild: how a distributed run assigns atoms to ranks,
            exchanges halos and rebuilds (:class:`DistributedForceField`).
        observers: callbacks every N steps (:class:`~atomshard.md.Observer`).
        progress: a progress bar on rank 0.

    Returns:
        :class:`MDResult` on rank 0, None on the other ranks.
    """
    comm = NullCommunicator(device=config.device) if comm is None else comm
    root = comm.rank == 0
    distributed = comm.world_size > 1
    device = "cpu" if distributed else config.device
    start = _Start()
    config, step, time_fs, thermostat, has_reference = root_call(
        comm, _read_start, config, resume, atoms, device, start
    )
    out = None if config.output is None else Path(config.output)
    if distributed:
        state: MDState = distributed_state(start.state, comm)
        state.step, state.time = int(step), float(time_fs)
        state.thermostat = {k: v.clone() for k, v in thermostat.items()}
    else:
        assert start.state is not None
        state = start.state
    start.state = None  # rank 0 keeps no copy of the whole system
    ff = force_field
    if ff is None:
        ff = _force_field(
            config,
            comm,
            state,
            model,
            partition=partition,
            transport=transport,
            rebuild=rebuild,
        )
    if has_reference and isinstance(ff, DistributedForceField):
        empty = torch.zeros(0, 3, dtype=torch.float64)
        ff.restore(state, start.reference if root else empty, start.regions)
    start.reference = start.regions = None
    ensemble_init(state, ff, config)

    logs: tuple[AppendLog, AppendLog] | None = None
    if root and out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "config.yaml") as handle:
            handle.write(config.to_yaml())
        logs = open_logs(out, start.offsets)
    shown = {"T": float("nan")}

    def record() -> None:
        """Thermo row, trajectory frame and observers due at this step. Collective."""
        if out is not None and config.log_every and state.step % config.log_every == 0:
            row = thermo_row(state, conserved_energy(state, config))  # sums over ranks
            shown["T"] = float(row.split(",")[6])
            if logs is not None:
                logs[1].write(row)
        if out is not None and config.traj_every and state.step % config.traj_every == 0:
            frame = gather_state(state, comm)
            if logs is not None and frame is not None:
                logs[0].write(extxyz_frame(frame))
        due = [o for o in observers if o.due(state.step)]
        if any(not o.all_ranks for o in due):
            whole = gather_state(state, comm)
            if whole is not None:
                for o in due:
                    if not o.all_ranks:
                        o.fn(whole)
        for o in due:
            if o.all_ranks:
                o.fn(state, comm)

    def checkpoint() -> None:
        """Gather the state (and a distributed run's rebuild reference); rank 0 writes it."""
        if out is None:
            return
        whole = gather_state(state, comm)
        extra = None
        if isinstance(ff, DistributedForceField):
            ref = ff.reference_positions
            rows = gather_by_id(
                comm,
                state.atom_ids.cpu().numpy(),
                positions=(state.positions if ref is None else ref).detach().cpu().numpy(),
            )
            if rows is not None:
                extra = {
                    "reference": {
                        "positions": torch.as_tensor(rows["positions"]),
                        "cell": state.cell.detach().cpu(),
                        "regions": ff.regions_dict,
                    }
                }
        if whole is None or logs is None:
            return
        offsets = {"trajectory": logs[0].offset(), "thermo": logs[1].offset()}
        save_restart(out / "restart.pt", whole, config, offsets, extra=extra)

    if not resume:
        record()
        checkpoint()
    start_step = state.step
    bar = None
    if progress and root:
        from tqdm import tqdm

        where = f"on {comm.world_size} ranks" if distributed else f"{state.n_atoms} atoms"
        bar = tqdm(
            total=config.steps,
            initial=start_step,
            unit="step",
            mininterval=1.0,
            desc=f"md {config.ensemble} {where}",
            dynamic_ncols=True,
        )
    stop = torch.zeros(1, dtype=torch.float64)
    interrupted = False
    done_minimizing = converged(state, config)
    t_start = time.perf_counter()
    step_seconds: list[float] = []
    step_cpu: list[float] = []
    try:
        with StopOnSigterm() as sigterm:
            while state.step < config.steps and not done_minimizing:
                t_step, c_step = time.perf_counter(), time.process_time()
                ensemble_step(state, ff, config)
                done_minimizing = converged(state, config)
                if config.zero_momentum and state.step % config.zero_momentum == 0:
                    zero_momentum(state, comm)
                record()
                if config.restart_every and state.step % config.restart_every == 0:
                    checkpoint()
                if bar is not None:
                    bar.update(1)
                    rate = (state.step - start_step) / max(time.perf_counter() - t_start, 1e-9)
                    bar.set_postfix_str(
                        f"{rate:.2f} step/s, {rate * config.dt * 86400e-6:.3f} ns/day, "
                        f"T={shown['T']:.0f} K",
                        refresh=False,
                    )
                step_seconds.append(time.perf_counter() - t_step)
                step_cpu.append(time.process_time() - c_step)
                stop[0] = float(sigterm.received)
                if distributed:  # every rank stops after the same step
                    stop = comm.all_reduce_max(stop, what="stop request")
                if stop[0] > 0:
                    interrupted = True
                    break
    except BaseException:  # the error propagates; the logs keep every complete row
        if logs is not None:
            logs[0].close()
            logs[1].close()
        raise
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_start
    checkpoint()
    minimizer = done_minimizing is not None
    if out is not None and minimizer and config.traj_every and state.step % config.traj_every:
        # a minimiser's last state is always a frame; written after the restart file took
        # its offsets, so --resume cuts it away and continues bit-identically
        frame = gather_state(state, comm)
        if logs is not None and frame is not None:
            logs[0].write(extxyz_frame(frame))
    temperature = state.temperature()
    n_migrated = 0
    if isinstance(ff, DistributedForceField):
        n_migrated = comm.broadcast_object(ff.n_migrated) if distributed else ff.n_migrated
    if not root:
        return None
    if logs is not None and out is not None:
        logs[0].close()
        logs[1].close()
        label = f"{comm.world_size} ranks" if distributed else f"dt={config.dt} fs"
        plot_thermo(
            out / "thermo.csv",
            out / "thermo.png",
            title=f"{config.structure} x{tuple(config.repeat)}, {config.model}, "
            f"{config.ensemble}, {label}",
        )
    done = state.step - start_step
    rate = done / wall if wall > 0 else 0.0
    return MDResult(
        output=out,
        steps=done,
        n_atoms=getattr(state, "n_global", None) or state.n_atoms,
        wall_seconds=wall,
        steps_per_second=rate,
        median_step_seconds=statistics.median(step_seconds) if step_seconds else float("nan"),
        step_cpu_seconds=tuple(step_cpu),
        ns_per_day=rate * config.dt * 86400e-6,
        neighbor_builds=getattr(ff, "n_builds", 0),
        final_temperature=temperature,
        final_energy=state.energy,
        n_ranks=comm.world_size,
        n_migrated=n_migrated,
        interrupted=interrupted,
        converged=done_minimizing,
    )


def md_on_rank(comm: Communicator, config: MDConfig, **kwargs: Any) -> MDResult | None:
    """:func:`run_md` with the communicator first: the function a rank launcher runs."""
    return run_md(config, comm=comm, **kwargs)


def run_md_on_ranks(
    config: MDConfig,
    n_ranks: int = 1,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    threads_per_rank: int | None = None,
    **kwargs: Any,
) -> MDResult | None:
    """:func:`run_md` on ``n_ranks`` local ranks, on the torchrun/srun job, or here (1).

    SIGTERM to this (launching) process is passed on to the ranks, which stop after the
    same step and write the restart file. Returns rank 0's result (None on the other
    ranks of a torchrun job).
    """
    atoms = kwargs.pop("atoms", None)
    if n_ranks <= 1:
        return run_on_ranks(md_on_rank, n_ranks, config, timeout_s=timeout_s, atoms=atoms, **kwargs)

    with StopOnSigterm(forward=forward_to_children):
        return run_on_ranks(
            md_on_rank,
            n_ranks,
            config,
            timeout_s=timeout_s,
            threads_per_rank=threads_per_rank,
            root_only={"atoms": atoms},
            **kwargs,
        )
