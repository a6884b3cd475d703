"""Langevin dynamics (NVT) with the BAOAB splitting of Leimkuhler and Matthews.

| symbol | code | units |
|---|---|---|
| γ | ``friction`` | 1/fs |
| T | ``temperature`` | K |
| ξ | ``gaussian_noise(seed, step, atom_ids)`` | — |
| c₁ = e^{−γΔt} | ``c1`` | — |
| σ = √(k_B T / m) | ``sigma`` | Å/fs |

One step: B (half kick), A (half drift), O (``v = c₁ v + √(1−c₁²) σ ξ``), A, force
call, B. The noise is a function of ``(seed, step, atom id)`` only, so a run does not
depend on the partition and a restart needs no generator state.
"""

from __future__ import annotations

import math

import torch

from atomshard.errors import InputError
from atomshard.md.integrators.nve import check_dt, half_kick
from atomshard.md.noise import gaussian_noise
from atomshard.md.state import ForceField, MDState
from atomshard.units import KB, MVV2E


def langevin_init(state: MDState, force_field: ForceField) -> MDState:
    """Compute the initial forces."""
    force_field(state)
    return state


def langevin_step(
    state: MDState,
    force_field: ForceField,
    *,
    dt: float,
    temperature: float,
    friction: float,
    seed: int,
) -> MDState:
    """Advance one BAOAB step of ``dt`` fs at ``temperature`` K with ``friction`` 1/fs."""
    check_dt(dt)
    if temperature < 0:
        raise InputError(f"temperature must be >= 0 K, got {temperature}")
    if friction < 0:
        raise InputError(f"Langevin friction must be >= 0 1/fs, got {friction}")
    half_kick(state, dt)
    state.positions = state.positions + (0.5 * dt) * state.velocities
    c1 = math.exp(-friction * dt)
    sigma = torch.sqrt(KB * temperature / (state.masses * MVV2E))
    xi = torch.as_tensor(
        gaussian_noise(seed, state.step, state.atom_ids.cpu().numpy()),
        dtype=torch.float64,
        device=state.positions.device,
    )
    state.velocities = c1 * state.velocities + math.sqrt(1.0 - c1 * c1) * sigma[:, None] * xi
    state.positions = state.positions + (0.5 * dt) * state.velocities
    force_field(state)
    half_kick(state, dt)
    state.step += 1
    state.time += dt
    return state
