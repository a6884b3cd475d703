"""Velocity Verlet (microcanonical, NVE).

| symbol | code | units |
|---|---|---|
| x | ``state.positions`` | Å |
| v | ``state.velocities`` | Å/fs |
| F | ``state.forces`` | eV/Å |
| m | ``state.masses`` | amu |
| Δt | ``dt`` | fs |

One step: ``v += ½Δt F/m; x += Δt v; F = F(x); v += ½Δt F/m`` (one force call).
"""

from __future__ import annotations

from atomshard.errors import InputError
from atomshard.md.state import ForceField, MDState
from atomshard.units import ACCEL


def check_dt(dt: float) -> None:
    if not dt > 0:
        raise InputError(f"the timestep must be positive, got dt = {dt} fs")


def nve_init(state: MDState, force_field: ForceField) -> MDState:
    """Compute the initial forces."""
    force_field(state)
    return state


def half_kick(state: MDState, dt: float) -> None:
    """``v += ½Δt F/m``."""
    state.velocities = state.velocities + (0.5 * dt * ACCEL) * state.forces / state.masses[:, None]


def nve_step(state: MDState, force_field: ForceField, *, dt: float) -> MDState:
    """Advance one velocity-Verlet step of ``dt`` fs."""
    half_kick(state, dt)
    state.positions = state.positions + dt * state.velocities
    force_field(state)
    half_kick(state, dt)
    state.step += 1
    state.time += dt
    return state
