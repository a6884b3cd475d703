"""NPT: the Martyna–Tobias–Klein barostat with Nosé–Hoover chains on the atoms and the cell.

Equations of motion (MTK 1994; Tuckerman et al. 2006, the measure-preserving splitting),
with peculiar velocities ``v`` and a symmetric strain-rate tensor ``ν``:

    dr/dt = v + ν r                      dh/dt = ν h          (lattice vectors: rows of h)
    dv/dt = F/m − (ν + tr(ν)/N_f) v − v_ξ₁ v
    dν/dt = G / W − v_η₁ ν,   G = V (P_int − P_ext 1) + (2K/N_f) 1,   V P_int = Σ m v vᵀ − V σ

``σ`` is the model's stress (ASE sign, σ = (1/V) ∂E/∂ε). ``G`` is projected on the cell's
degrees of freedom: ``iso`` keeps ``(tr G / 3) 1`` (ν = ν_ε 1: volume only), ``aniso`` the
diagonal (three independent axes in the Cartesian frame), ``tri`` all six symmetric
components (a fully flexible triclinic cell; no rotation). The particle chain thermostats
``N_f = 3N`` degrees of freedom, the barostat chain the ``n_b`` = 1, 3 or 6 of ``ν``.

| symbol | code | units |
|---|---|---|
| ν | ``thermostat["nu"]`` ``[3, 3]`` | 1/fs |
| W = (N_f + 3) k_B T τ_P² / 3 (per component) | ``_cell_mass`` | eV fs² |
| τ_P, τ_T | ``pdamp``, ``tdamp`` | fs |
| P_ext | ``pressure`` (GPa) / ``EV_PER_A3_TO_GPA`` | eV/Å³ |
| ξ_j, v_ξj; Q₁ = N_f k_B T τ_T², Q_j = k_B T τ_T² | ``thermostat["xi"]``, ``["v_xi"]`` | —, 1/fs |
| η_j, v_ηj; Q_b1 = n_b k_B T τ_P², Q_bj = k_B T τ_P² | ``["eta"]``, ``["v_eta"]`` | —, 1/fs |
| V₀ (for the collapse check) | ``thermostat["volume0"]`` | Å³ |

One step (symmetric Trotter splitting, one force call): cell chain ½, atom chain ½, ν ½
(``G`` from the current v and σ), v ½ (exact for constant F: ``v ← e^{−AΔt/2} v +
½Δt φ(AΔt/2) F/m``, ``A = ν + tr(ν)/N_f``), r and h a full step (``r ← r e^{νΔt} +
Δt ψ(νΔt) v``), forces and stress, v ½, ν ½, atom chain ½, cell chain ½. The matrix
functions are evaluated in the eigenbasis of the symmetric ν, so every operator is exact.

The conserved quantity (:func:`npt_conserved`) is ``K + U + ½ W Σ ν_ij² + P_ext V`` plus
both chains' energies; with a short ``dt`` it stays constant to integration error. All sums
are global (:meth:`MDState.sum_over_ranks`), so every rank applies the same ν and cell.
"""

from __future__ import annotations

import math

import torch

from atomshard.errors import InputError
from atomshard.md.integrators.nose_hoover import (
    atoms_chain_half_step,
    chain_energy,
    chain_half_step,
    chain_masses,
)
from atomshard.md.integrators.nve import check_dt
from atomshard.md.state import ForceField, MDState
from atomshard.units import ACCEL, EV_PER_A3_TO_GPA, KB, MVV2E

#: degrees of freedom of ν for each barostat mode
CELL_DOF = {"iso": 1, "aniso": 3, "tri": 6}
#: the volume may change by this factor from the start before the run is stopped
COLLAPSE_FACTOR = 8.0


def _cell_mass(state: MDState, temperature: float, pdamp: float) -> float:
    return (state.n_dof() + 3) * KB * temperature * pdamp * pdamp / 3.0


def _volume(state: MDState) -> float:
    return abs(float(torch.linalg.det(state.cell)))


def npt_init(
    state: MDState,
    force_field: ForceField,
    *,
    temperature: float,
    tdamp: float,
    pdamp: float,
    barostat: str,
    chain: int = 3,
) -> MDState:
    """Check the set-up, zero the barostat and chain variables, compute forces and stress.

    Raises:
        InputError: a non-periodic axis, no stress from the force field, or bad numbers.
    """
    if not temperature > 0:
        raise InputError(f"npt needs a positive temperature, got {temperature} K")
    for name, value in (("tdamp", tdamp), ("pdamp", pdamp)):
        if not value > 0 or not math.isfinite(value):
            raise InputError(f"npt: {name} must be a positive time in fs, got {value}")
    if barostat not in CELL_DOF:
        raise InputError(f"npt: barostat {barostat!r} must be one of {', '.join(CELL_DOF)}")
    force_field(state)  # in a distributed run this also gives every rank the cell
    if not bool(state.pbc.all()):
        axes = "".join("abc"[i] for i in range(3) if not bool(state.pbc[i]))
        raise InputError(
            f"npt: the barostat needs a cell periodic along a, b and c; axis {axes} is not "
            f"periodic (use nose-hoover for slabs and clusters)"
        )
    if state.stress is None:
        raise InputError("npt: the force field gave no stress (it is needed for the pressure)")
    if "nu" not in state.thermostat:
        f64 = torch.float64
        state.thermostat = {
            "xi": torch.zeros(chain, dtype=f64),
            "v_xi": torch.zeros(chain, dtype=f64),
            "eta": torch.zeros(chain, dtype=f64),
            "v_eta": torch.zeros(chain, dtype=f64),
            "nu": torch.zeros(3, 3, dtype=f64),
            "volume0": torch.tensor(_volume(state), dtype=f64),
        }
    return state


def _project(g: torch.Tensor, barostat: str) -> torch.Tensor:
    if barostat == "iso":
        return torch.eye(3, dtype=g.dtype) * (torch.trace(g) / 3.0)
    if barostat == "aniso":
        return torch.diag(torch.diagonal(g))
    return 0.5 * (g + g.T)


def _cell_force(state: MDState, pressure: float, barostat: str) -> torch.Tensor:
    """``G`` (eV): internal minus external pressure times V, plus the 2K/N_f term."""
    assert state.stress is not None
    m = state.masses[:, None].to(torch.float64)
    kinetic = state.sum_over_ranks((m * state.velocities).T @ state.velocities).cpu() * MVV2E
    volume = _volume(state)
    p_ext = pressure / EV_PER_A3_TO_GPA
    g = kinetic - volume * state.stress.detach().cpu().to(torch.float64)
    g = g - volume * p_ext * torch.eye(3, dtype=torch.float64)
    g = g + (float(torch.trace(kinetic)) / state.n_dof()) * torch.eye(3, dtype=torch.float64)
    return _project(g, barostat)


def _phi(x: torch.Tensor) -> torch.Tensor:
    """``(1 − e^{−x}) / x``, 1 at x = 0."""
    safe = torch.where(x.abs() < 1e-12, torch.ones_like(x), x)
    return torch.where(x.abs() < 1e-12, 1.0 - 0.5 * x, -torch.expm1(-safe) / safe)


def _psi(x: torch.Tensor) -> torch.Tensor:
    """``(e^{x} − 1) / x``, 1 at x = 0."""
    safe = torch.where(x.abs() < 1e-12, torch.ones_like(x), x)
    return torch.where(x.abs() < 1e-12, 1.0 + 0.5 * x, torch.expm1(safe) / safe)


def _velocity_half_step(state: MDState, nu: torch.Tensor, dt: float) -> None:
    """``v ← e^{−A h} v + h φ(A h) F/m`` with ``A = ν + tr(ν)/N_f``, ``h = Δt/2``."""
    h = 0.5 * dt
    lam, vecs = torch.linalg.eigh(nu)
    mu = (lam + float(torch.trace(nu)) / state.n_dof()) * h
    device = state.velocities.device
    vecs_d = vecs.to(device)
    accel = (ACCEL * state.forces / state.masses[:, None]) @ vecs_d
    v = state.velocities @ vecs_d
    v = v * torch.exp(-mu).to(device) + h * accel * _phi(mu).to(device)
    state.velocities = v @ vecs_d.T


def _position_step(state: MDState, nu: torch.Tensor, dt: float) -> None:
    """``r ← r e^{νΔt} + Δt ψ(νΔt) v`` and ``h ← h e^{νΔt}`` (rows)."""
    lam, vecs = torch.linalg.eigh(nu)
    x = lam * dt
    device = state.positions.device
    vecs_d = vecs.to(device)
    r = state.positions @ vecs_d
    v = state.velocities @ vecs_d
    r = r * torch.exp(x).to(device) + dt * v * _psi(x).to(device)
    state.positions = r @ vecs_d.T
    grow = vecs @ torch.diag(torch.exp(x)) @ vecs.T
    state.cell = (state.cell.cpu().to(torch.float64) @ grow).to(state.cell)


def _cell_chain(state: MDState, dt: float, kt: float, pdamp: float, n_cell: int, w: float) -> None:
    """The barostat's chain over ``Δt/2``; scales ν."""
    nu = state.thermostat["nu"]
    scale = chain_half_step(
        state.thermostat["eta"],
        state.thermostat["v_eta"],
        chain_masses(n_cell, kt, pdamp, state.thermostat["v_eta"].shape[0]),
        two_ke=w * float((nu * nu).sum()),
        n_dof=n_cell,
        kt=kt,
        dt=dt,
    )
    state.thermostat["nu"] = nu * scale


def npt_step(
    state: MDState,
    force_field: ForceField,
    *,
    dt: float,
    temperature: float,
    pressure: float,
    tdamp: float,
    pdamp: float,
    barostat: str,
) -> MDState:
    """Advance one MTK NPT step of ``dt`` fs (pressure in GPa); see the module docstring."""
    check_dt(dt)
    n_cell = CELL_DOF[barostat]
    w = _cell_mass(state, temperature, pdamp)
    kt = KB * temperature
    _cell_chain(state, dt, kt, pdamp, n_cell, w)
    atoms_chain_half_step(state, dt, temperature, tdamp)
    nu = state.thermostat["nu"] + (0.5 * dt / w) * _cell_force(state, pressure, barostat)
    _velocity_half_step(state, nu, dt)
    _position_step(state, nu, dt)
    force_field(state)
    _velocity_half_step(state, nu, dt)
    state.thermostat["nu"] = nu + (0.5 * dt / w) * _cell_force(state, pressure, barostat)
    atoms_chain_half_step(state, dt, temperature, tdamp)
    _cell_chain(state, dt, kt, pdamp, n_cell, w)
    state.step += 1
    state.time += dt
    _check_cell(state)
    return state


def _check_cell(state: MDState) -> None:
    volume = _volume(state)
    start = float(state.thermostat["volume0"])
    if not math.isfinite(volume) or not start / COLLAPSE_FACTOR < volume < start * COLLAPSE_FACTOR:
        raise InputError(
            f"npt: the cell volume went from {start:.1f} to {volume:.1f} Å³ by step "
            f"{state.step}: the barostat is unstable (increase --pdamp, decrease --dt, or "
            f"check the target pressure)"
        )
    if not math.isfinite(state.energy):
        raise InputError(f"npt: the energy is not finite at step {state.step}")


def npt_conserved(
    state: MDState,
    *,
    temperature: float,
    pressure: float,
    tdamp: float,
    pdamp: float,
    barostat: str,
) -> float:
    """The extended-system energy (eV) that the MTK equations conserve."""
    kt = KB * temperature
    nu = state.thermostat["nu"]
    w = _cell_mass(state, temperature, pdamp)
    n_cell = CELL_DOF[barostat]
    energy = state.kinetic_energy() + state.energy
    energy += 0.5 * w * float((nu * nu).sum())
    energy += pressure / EV_PER_A3_TO_GPA * _volume(state)
    for x, v, n, tau in (("xi", "v_xi", state.n_dof(), tdamp), ("eta", "v_eta", n_cell, pdamp)):
        pos, vel = state.thermostat[x], state.thermostat[v]
        energy += chain_energy(pos, vel, chain_masses(n, kt, tau, vel.shape[0]), n, kt)
    return energy
