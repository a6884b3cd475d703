"""Run an MD simulation from an :class:`MDConfig`: outputs, restarts and resume.

Output folder layout:
    config.yaml        the run's configuration
    trajectory.extxyz  frames every ``traj_every`` steps (energy, stress, forces, velocities)
    thermo.csv         step, time, E_pot, E_kin, E_tot, conserved, T, P every ``log_every`` steps
    thermo.png         energies and temperature against time (written at the end)
    restart.pt         state every ``restart_every`` steps and at the end, written atomically

``resume=True`` reloads ``restart.pt``, cuts the trajectory and log back to what they
held when it was written, and continues: the result is bit-identical to an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atomshard.errors import InputError
from atomshard.md.config import MDConfig
from atomshard.md.ensemble import conserved_energy, ensemble_init, ensemble_step
from atomshard.md.forcefield import SerialForceField
from atomshard.md.outputs import extxyz_frame, open_logs, plot_thermo, thermo_row
from atomshard.md.state import ForceField, MDState, maxwell_boltzmann, state_from_ase
from atomshard.utils.config import config_from_dict, config_to_dict
from atomshard.utils.files import atomic_save_torch, atomic_write

RESTART_FORMAT = "atomshard-md-restart-1"
_STATE_TENSORS = (
    "positions",
    "velocities",
    "masses",
    "species",
    "atom_ids",
    "cell",
    "pbc",
    "forces",
)


@dataclass
class MDResult:
    """What a finished run reports."""

    output: Path
    steps: int
    n_atoms: int
    wall_seconds: float
    steps_per_second: float
    ns_per_day: float
    neighbor_builds: int
    final_temperature: float
    final_energy: float


def save_restart(
    path: Path,
    state: MDState,
    config: MDConfig,
    offsets: dict[str, int],
    *,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``state`` atomically; ``extra`` entries (tensors, plain values) are added as is."""
    payload: dict[str, Any] = {
        **(extra or {}),
        "format": RESTART_FORMAT,
        "config": config_to_dict(config),
        "state": {name: getattr(state, name).detach().cpu() for name in _STATE_TENSORS},
        "stress": None if state.stress is None else state.stress.detach().cpu(),
        "energy": state.energy,
        "step": state.step,
        "time": state.time,
        "thermostat": {k: v.clone() for k, v in state.thermostat.items()},
        "offsets": offsets,
    }
    atomic_save_torch(payload, path)


def load_restart(path: Path, device: str) -> tuple[MDState, dict[str, Any], dict[str, int]]:
    if not path.exists():
        raise InputError(f"cannot resume: {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"cannot resume: restart file {str(path)!r} is corrupt: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != RESTART_FORMAT:
        raise InputError(f"cannot resume: {str(path)!r} is not an atomshard MD restart file")
    tensors = {k: v.to(device) for k, v in data["state"].items()}
    state = MDState(
        **tensors,
        energy=float(data["energy"]),
        stress=None if data["stress"] is None else data["stress"].to(device),
        step=int(data["step"]),
        time=float(data["time"]),
        thermostat=dict(data["thermostat"]),
    )
    return state, data["config"], dict(data["offsets"])


def load_restart_extra(path: Path, key: str) -> Any:
    """An extra entry of a restart file written with ``save_restart(..., extra=...)``."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    return data.get(key) if isinstance(data, dict) else None


def _initial_state(config: MDConfig, device: str) -> MDState:
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


def run_md(
    config: MDConfig,
    *,
    resume: bool = False,
    model: torch.nn.Module | None = None,
    force_field: ForceField | None = None,
    progress: bool = True,
) -> MDResult:
    """Run (or resume) the simulation described by ``config``; see the module docstring."""
    out = Path(config.output)
    restart_path = out / "restart.pt"
    offsets: dict[str, int] | None = None
    if resume:
        state, stored, offsets = load_restart(restart_path, config.device)
        stored_cfg = config_from_dict(MDConfig, stored, where=str(restart_path))
        # Only the length of the run may change on resume; everything else is the stored run's.
        config = dataclasses.replace(stored_cfg, steps=config.steps, output=config.output)
    else:
        if out.exists() and (out / "thermo.csv").exists():
            raise InputError(
                f"output folder {str(out)!r} already holds a run; pass --resume to continue it "
                f"or choose another --output"
            )
        state = _initial_state(config, config.device)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "config.yaml") as handle:
        handle.write(config.to_yaml())

    if force_field is None:
        if model is None:
            from atomshard.models.resolve import resolve_model

            dtype = getattr(torch, config.dtype) if config.dtype else None
            model = resolve_model(config.model, dtype=dtype)
        model = model.to(config.device)
        model.check_species(state.species, name=config.structure)  # type: ignore[operator]
        blocks = None if config.block_atoms == "off" else config.block_atoms
        force_field = SerialForceField(
            model,  # type: ignore[arg-type]
            skin=config.skin,
            block_atoms=blocks,
        )

    def conserved() -> float:
        return conserved_energy(state, config)

    ensemble_init(state, force_field, config)

    traj, thermo = open_logs(out, offsets)

    def record() -> None:
        if config.log_every and state.step % config.log_every == 0:
            thermo.write(thermo_row(state, conserved()))
        if config.traj_every and state.step % config.traj_every == 0:
            traj.write(extxyz_frame(state))

    def checkpoint() -> None:
        save_restart(
            restart_path, state, config, {"trajectory": traj.offset(), "thermo": thermo.offset()}
        )

    if not resume:
        record()
        checkpoint()
    start_step = state.step
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=config.steps,
            initial=start_step,
            unit="step",
            mininterval=1.0,
            desc=f"md {config.ensemble} {state.n_atoms} atoms",
            dynamic_ncols=True,
        )
    t_start = time.perf_counter()
    try:
        while state.step < config.steps:
            ensemble_step(state, force_field, config)
            record()
            if config.restart_every and state.step % config.restart_every == 0:
                checkpoint()
            if bar is not None:
                bar.update(1)
                rate = (state.step - start_step) / max(time.perf_counter() - t_start, 1e-9)
                bar.set_postfix_str(
                    f"{rate:.2f} step/s, {rate * config.dt * 86400e-6:.3f} ns/day, "
                    f"T={state.temperature():.0f} K",
                    refresh=False,
                )
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_start
    checkpoint()
    traj.close()
    thermo.close()
    plot_thermo(
        out / "thermo.csv",
        out / "thermo.png",
        title=f"{config.structure} x{tuple(config.repeat)}, {config.model}, "
        f"{config.ensemble}, dt={config.dt} fs",
    )
    done = state.step - start_step
    rate = done / wall if wall > 0 else 0.0
    return MDResult(
        output=out,
        steps=done,
        n_atoms=state.n_atoms,
        wall_seconds=wall,
        steps_per_second=rate,
        ns_per_day=rate * config.dt * 86400e-6,
        neighbor_builds=getattr(force_field, "n_builds", 0),
        final_temperature=state.temperature(),
        final_energy=state.energy,
    )
