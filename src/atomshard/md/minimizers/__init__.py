"""Energy minimisers run by the one MD driver: FIRE and conjugate gradients.

Each is a pair of plain functions like the integrators (``fire_init`` / ``fire_step``,
``cg_init`` / ``cg_step``); :mod:`atomshard.md.ensemble` dispatches ``ensemble = "fire"``
or ``"cg"`` to them through :func:`minimizer_init`, :func:`minimizer_step`,
:func:`minimizer_converged` and :func:`minimizer_objective`. They relax positions, and with
``min_cell`` = ``iso``/``aniso``/``tri`` also the cell under ``pressure`` (the enthalpy
``E + P V``, see :mod:`atomshard.md.minimizers._objective`). Their variables live in
``state.thermostat`` (global tensors saved in restart files) and, per atom, in
``state.velocities``, so a resumed run is bit-identical and atoms may migrate between
ranks at any force call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atomshard.md.minimizers._objective import MAX_STEP, Target, is_converged, objective
from atomshard.md.minimizers.cg import cg_init, cg_step
from atomshard.md.minimizers.fire import fire_init, fire_step
from atomshard.md.state import ForceField, MDState

if TYPE_CHECKING:
    from atomshard.md.config import MDConfig

__all__ = [
    "MAX_STEP",
    "cg_init",
    "cg_step",
    "fire_init",
    "fire_step",
    "minimizer_converged",
    "minimizer_init",
    "minimizer_objective",
    "minimizer_step",
]


def minimizer_init(state: MDState, force_field: ForceField, config: MDConfig) -> MDState:
    """First forces and the minimiser's variables (``config.ensemble``: fire or cg)."""
    if config.ensemble == "fire":
        return fire_init(
            state, force_field, dt=config.dt, cell=config.min_cell, pressure=config.pressure
        )
    return cg_init(state, force_field, cell=config.min_cell, pressure=config.pressure)


def minimizer_step(state: MDState, force_field: ForceField, config: MDConfig) -> MDState:
    """One iteration of ``config.ensemble`` (fire or cg)."""
    step = fire_step if config.ensemble == "fire" else cg_step
    return step(state, force_field, dt=config.dt, cell=config.min_cell, pressure=config.pressure)


def minimizer_converged(state: MDState, config: MDConfig) -> bool:
    """``config.fmax`` / ``config.etol`` met (the same answer on every rank)."""
    return is_converged(state, fmax=config.fmax, etol=config.etol)


def minimizer_objective(state: MDState, config: MDConfig) -> float:
    """What is minimised: E, or E + P V with a cell relaxation, eV."""
    return objective(state, Target.of(config.min_cell, config.pressure))
