"""MD restart files and the whole-system view of a state spread over ranks.

A restart file (``restart.pt``, format ``atomshard-md-restart-1``) holds the run's
configuration, the state of every atom in global atom-id order, the ensemble's extra
variables and the byte offsets of the trajectory and thermo log when it was written, so a
resumed run cuts those files back and continues bit-identically. Distributed runs add one
entry, ``reference``: the positions and cell of the last neighbour-list rebuild (and the
set-up regions of a local-rebuild run), from which a resumed run rebuilds the same plans.
Serial runs read such a file as their own (they ignore ``reference``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from atomshard.comm import Communicator, gather_by_id
from atomshard.errors import InputError
from atomshard.md.config import MDConfig
from atomshard.md.state import MDState
from atomshard.utils.config import config_to_dict
from atomshard.utils.files import atomic_save_torch

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


def load_restart(path: Path, device: str) -> tuple[MDState, dict[str, Any], dict[str, Any]]:
    """``(state, stored config dict, {"offsets": ..., "reference": ... or None})``.

    Raises:
        InputError: the file is missing, corrupt or not an MD restart file.
    """
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
    extra = {"offsets": dict(data["offsets"]), "reference": data.get("reference")}
    return state, data["config"], extra


def gather_state(state: MDState, comm: Communicator) -> MDState | None:
    """The whole system as one :class:`MDState` on rank 0 (None elsewhere), in atom-id order.

    Collective. With one rank the state itself is returned (it already holds every atom).
    """
    if comm.world_size == 1:
        return state
    got = gather_by_id(
        comm,
        state.atom_ids.cpu().numpy(),
        positions=state.positions.detach().cpu().numpy(),
        velocities=state.velocities.cpu().numpy(),
        masses=state.masses.cpu().numpy(),
        species=state.species.cpu().numpy(),
        forces=state.forces.detach().cpu().numpy(),
    )
    if got is None:
        return None
    return MDState(
        positions=torch.as_tensor(got["positions"]),
        velocities=torch.as_tensor(got["velocities"]),
        masses=torch.as_tensor(got["masses"]),
        species=torch.as_tensor(got["species"]),
        atom_ids=torch.as_tensor(got["ids"]),
        cell=state.cell.clone(),
        pbc=state.pbc.clone(),
        forces=torch.as_tensor(got["forces"]),
        energy=state.energy,
        stress=state.stress,
        step=state.step,
        time=state.time,
        thermostat={k: v.clone() for k, v in state.thermostat.items()},
    )
