"""Nosé–Hoover chain NVT (Martyna, Klein and Tuckerman 1992), Trotter-split around Verlet.

| symbol | code | units |
|---|---|---|
| M | ``chain`` (length) | — |
| ξ_j | ``thermostat["xi"][j]`` | — |
| v_ξj | ``thermostat["v_xi"][j]`` | 1/fs |
| Q₁ = N_f k_B T τ², Q_j = k_B T τ² | ``q`` | eV fs² |
| τ | ``tdamp`` | fs |
| N_f | ``state.n_dof()`` | — |

One step: chain half step (Δt/2), velocity Verlet, chain half step. The conserved
quantity ``E_kin + E_pot + Σ ½Q_j v_ξj² + N_f k_B T ξ₁ + Σ_{j>1} k_B T ξ_j`` is reported by
:func:`nose_hoover_conserved`.
"""

from __future__ import annotations

import math

import torch

from atomshard.errors import InputError
from atomshard.md.integrators.nve import check_dt, half_kick
from atomshard.md.state import ForceField, MDState
from atomshard.units import KB


def chain_masses(n_dof: int, kt: float, tau: float, chain: int) -> torch.Tensor:
    """Chain masses ``Q₁ = n_dof k_B T τ²``, ``Q_j = k_B T τ²`` (eV fs²)."""
    q = torch.full((chain,), kt * tau * tau, dtype=torch.float64)
    q[0] = n_dof * kt * tau * tau
    return q


def chain_energy(
    xi: torch.Tensor, v: torch.Tensor, q: torch.Tensor, n_dof: int, kt: float
) -> float:
    """A chain's energy ``Σ ½Q_j v_j² + n_dof k_B T ξ₁ + Σ_{j>1} k_B T ξ_j`` (eV)."""
    energy = float((0.5 * q * v * v).sum()) + n_dof * kt * float(xi[0])
    energy += kt * float(xi[1:].sum())
    return energy


def _masses(state: MDState, temperature: float, tdamp: float, chain: int) -> torch.Tensor:
    return chain_masses(state.n_dof(), KB * temperature, tdamp, chain)


def nose_hoover_init(
    state: MDState,
    force_field: ForceField,
    *,
    temperature: float,
    tdamp: float,
    chain: int = 3,
) -> MDState:
    """Compute initial forces and zero the chain variables (kept in ``state.thermostat``)."""
    if not temperature > 0:
        raise InputError(f"Nosé–Hoover needs a positive temperature, got {temperature} K")
    if not tdamp > 0:
        raise InputError(f"Nosé–Hoover damping time must be positive, got tdamp = {tdamp} fs")
    if chain < 1:
        raise InputError(f"Nosé–Hoover chain length must be >= 1, got {chain}")
    if "xi" not in state.thermostat:
        state.thermostat = {
            "xi": torch.zeros(chain, dtype=torch.float64),
            "v_xi": torch.zeros(chain, dtype=torch.float64),
        }
    force_field(state)
    return state


def chain_half_step(
    xi: torch.Tensor,
    v: torch.Tensor,
    q: torch.Tensor,
    *,
    two_ke: float,
    n_dof: int,
    kt: float,
    dt: float,
) -> float:
    """Advance a chain (``xi``, ``v`` in place) over ``dt / 2``; returns the velocity scale.

    ``two_ke`` is twice the kinetic energy of the ``n_dof`` thermostatted degrees of freedom
    (atoms, or a barostat's cell); the caller multiplies their velocities by the result.
    """
    m = v.shape[0]
    h = 0.5 * dt  # this half step's length
    q4, q8 = 0.5 * h, 0.25 * h

    def force(j: int, two_ke: float) -> float:
        if j == 0:
            return (two_ke - n_dof * kt) / float(q[0])
        return (float(q[j - 1]) * float(v[j - 1]) ** 2 - kt) / float(q[j])

    # inward sweep: last link first
    v[m - 1] += q4 * force(m - 1, two_ke)
    for j in range(m - 2, -1, -1):
        damp = math.exp(-q8 * float(v[j + 1]))
        v[j] = v[j] * damp
        v[j] += q4 * force(j, two_ke)
        v[j] = v[j] * damp
    xi += h * v
    scale = math.exp(-h * float(v[0]))
    two_ke *= scale * scale
    # outward sweep
    for j in range(m - 1):
        damp = math.exp(-q8 * float(v[j + 1]))
        v[j] = v[j] * damp
        v[j] += q4 * force(j, two_ke)
        v[j] = v[j] * damp
    v[m - 1] += q4 * force(m - 1, two_ke)
    return scale


def atoms_chain_half_step(state: MDState, dt: float, temperature: float, tdamp: float) -> None:
    """The atoms' chain over ``dt / 2``: chain variables in ``state.thermostat``, v scaled."""
    v = state.thermostat["v_xi"]
    scale = chain_half_step(
        state.thermostat["xi"],
        v,
        _masses(state, temperature, tdamp, v.shape[0]),
        two_ke=2.0 * state.kinetic_energy(),
        n_dof=state.n_dof(),
        kt=KB * temperature,
        dt=dt,
    )
    state.velocities = state.velocities * scale


def nose_hoover_step(
    state: MDState,
    force_field: ForceField,
    *,
    dt: float,
    temperature: float,
    tdamp: float,
) -> MDState:
    """Advance one Nosé–Hoover-chain step of ``dt`` fs."""
    check_dt(dt)
    atoms_chain_half_step(state, dt, temperature, tdamp)
    half_kick(state, dt)
    state.positions = state.positions + dt * state.velocities
    force_field(state)
    half_kick(state, dt)
    atoms_chain_half_step(state, dt, temperature, tdamp)
    state.step += 1
    state.time += dt
    return state


def nose_hoover_conserved(state: MDState, *, temperature: float, tdamp: float) -> float:
    """The extended-system energy (eV) that the chain dynamics conserves."""
    xi = state.thermostat["xi"]
    v = state.thermostat["v_xi"]
    q = _masses(state, temperature, tdamp, v.shape[0])
    return (
        state.kinetic_energy()
        + state.energy
        + chain_energy(xi, v, q, state.n_dof(), KB * temperature)
    )
