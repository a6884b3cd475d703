"""What FIRE and CG share: the objective, the cell's generalised force, strains, convergence.

The objective is the potential energy ``E``, or with a cell relaxation (``cell`` = ``iso``,
``aniso`` or ``tri``) the enthalpy ``H = E + P V`` at the target pressure ``P``.

Cell degrees of freedom follow ASE's ``UnitCellFilter`` scaling. A symmetric strain ε moves
every position and lattice vector as ``r → r (I + ε)`` (row vectors), so the fractional
coordinates are kept. The minimisers move the generalised coordinate ``q = N ε``
(``N``: atoms in the whole system), whose force is

    Φ = −∂H/∂q = −V (σ + P I) / N      (eV)

with σ the stress (ASE sign, ``σ = (1/V) ∂E/∂ε``). Dividing by ``N`` makes Φ the per-atom
volume times the stress deviation: a number of the size of an atomic force, so one
``fmax`` and one step limit serve both. Φ is projected on the allowed strains: ``iso``
keeps ``(tr Φ / 3) I`` (volume only), ``aniso`` the diagonal, ``tri`` the symmetric part.

| symbol | code | units |
|---|---|---|
| E | ``state.energy`` | eV |
| P | ``target.pressure`` (``--pressure`` GPa / ``EV_PER_A3_TO_GPA``) | eV/Å³ |
| V | :func:`volume` | Å³ |
| σ | ``state.stress`` | eV/Å³ |
| N | :func:`n_atoms_global` | — |
| Φ | :func:`cell_force` | eV |
| ε | ``strain`` of :func:`apply_strain` | — |

Convergence (:func:`is_converged`): ``fmax`` in ``state.thermostat`` is the largest of every
atom's ``|F_i|`` (eV/Å) and, with a cell relaxation, every row norm ``|Φ_r|`` (eV); the
run has converged when it is below ``fmax``. With a cell this means the stress deviation
``|σ + P I|`` (row norms) is below ``fmax · N / V`` eV/Å³ — for fcc argon (V/N ≈ 40 Å³)
and ``fmax`` = 0.01 that is 2.5·10⁻⁴ eV/Å³ = 0.04 GPa. With ``etol > 0`` it has also
converged when the objective changed by at most ``etol · ½(|H| + |H_prev|)`` in the last
iteration (LAMMPS's ``etol``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from atomshard.errors import InputError
from atomshard.md.state import MDState
from atomshard.units import EV_PER_A3_TO_GPA

#: largest displacement of any atom (or row of the cell coordinate q) in one iteration, Å
MAX_STEP = 0.2
#: largest strain component added to the cell in one iteration
MAX_STRAIN = 0.02
#: a cell relaxation stops with an error when the volume changes by more than this factor
MAX_VOLUME_RATIO = 8.0
CELL_MODES = ("none", "iso", "aniso", "tri")


@dataclass(frozen=True)
class Target:
    """What is minimised: the cell mode and the pressure (eV/Å³)."""

    cell: str = "none"
    pressure: float = 0.0

    @classmethod
    def of(cls, cell: str, pressure_gpa: float) -> Target:
        if cell not in CELL_MODES:
            modes = ", ".join(CELL_MODES)
            raise InputError(f"cell relaxation must be one of {modes}, got {cell!r}")
        if not math.isfinite(pressure_gpa):
            raise InputError(f"pressure must be a finite number (GPa), got {pressure_gpa}")
        return cls(cell=cell, pressure=float(pressure_gpa) / EV_PER_A3_TO_GPA)

    @property
    def moves_cell(self) -> bool:
        return self.cell != "none"


def volume(state: MDState) -> float:
    """Cell volume, Å³."""
    return abs(float(torch.linalg.det(state.cell.to(torch.float64))))


def n_atoms_global(state: MDState) -> int:
    """Atoms of the whole system (the same on every rank)."""
    return state.n_dof() // 3


def check_target(state: MDState, target: Target) -> None:
    """A cell relaxation needs a cell periodic along a, b and c, and a stress.

    Called after the first force call, when every rank holds the cell and pbc.
    """
    if not target.moves_cell:
        return
    pbc = state.pbc.cpu().tolist()
    if not all(pbc):
        open_axes = ", ".join(axis for axis, p in zip("abc", pbc, strict=True) if not p)
        raise InputError(
            f"cell relaxation ({target.cell}) needs a cell periodic along a, b and c; this "
            f"structure is not periodic along {open_axes} (relax positions only: --cell none)"
        )
    if state.stress is None:
        raise InputError(f"cell relaxation ({target.cell}): the force field returned no stress")


def objective(state: MDState, target: Target) -> float:
    """``E``, or ``E + P V`` with a cell relaxation, eV."""
    if target.moves_cell:
        return state.energy + target.pressure * volume(state)
    return state.energy


def project(phi: torch.Tensor, mode: str) -> torch.Tensor:
    """``phi`` [3, 3] restricted to the strains ``mode`` allows."""
    if mode == "iso":
        return torch.eye(3, dtype=phi.dtype) * (torch.trace(phi) / 3.0)
    if mode == "aniso":
        return torch.diag(torch.diagonal(phi))
    return 0.5 * (phi + phi.T)


def cell_force(state: MDState, target: Target, n_atoms: int) -> torch.Tensor:
    """Φ = −V (σ + P I) / N projected on ``target.cell``: ``[3, 3]`` float64, eV (CPU).

    Zero without a cell relaxation.
    """
    if not target.moves_cell:
        return torch.zeros(3, 3, dtype=torch.float64)
    assert state.stress is not None
    sigma = state.stress.detach().to(device="cpu", dtype=torch.float64)
    phi = -volume(state) * (sigma + target.pressure * torch.eye(3, dtype=torch.float64))
    return project(phi / max(n_atoms, 1), target.cell)


def apply_strain(state: MDState, strain: torch.Tensor) -> None:
    """Positions and cell ``r → r (I + ε)`` (fractional coordinates kept).

    Raises:
        InputError: the volume left ``[V₀ / 8, 8 V₀]`` (``V₀``: the volume at the start,
            ``state.thermostat["volume0"]``) — the cell collapses or blows up.
    """
    device = state.positions.device
    deform = torch.eye(3, dtype=torch.float64) + strain
    state.positions = state.positions @ deform.to(device)
    state.cell = state.cell @ deform.to(state.cell.device)
    v0 = float(state.thermostat["volume0"][0])
    v = volume(state)
    if not (v0 / MAX_VOLUME_RATIO <= v <= MAX_VOLUME_RATIO * v0):
        raise InputError(
            f"cell relaxation: the volume went from {v0:.4g} to {v:.4g} Å³ at iteration "
            f"{state.step + 1}; the cell collapses or blows up (is the pressure right for "
            f"this potential?)"
        )


def row_norm_max(rows: torch.Tensor) -> float:
    """Largest row norm of a local ``[n, 3]`` tensor (0 for no rows)."""
    if rows.numel() == 0:
        return 0.0
    return float(torch.linalg.vector_norm(rows, dim=1).max())


def global_max(state: MDState, *values: float) -> list[float]:
    """Each value's maximum over the ranks (one reduction)."""
    reduced = state.max_over_ranks(torch.tensor(values, dtype=torch.float64))
    return [float(x) for x in reduced]


def start_variables(state: MDState) -> dict[str, torch.Tensor]:
    """The variables both minimisers keep in ``state.thermostat``."""
    return {
        "volume0": torch.tensor([volume(state)], dtype=torch.float64),
        "objective": torch.tensor([math.nan], dtype=torch.float64),
        "objective_change": torch.tensor([math.inf], dtype=torch.float64),
        "fmax": torch.tensor([math.inf], dtype=torch.float64),
    }


def start_minimizer(
    state: MDState, force_field: Any, target: Target, variables: dict[str, torch.Tensor]
) -> MDState:
    """The common ``*_init``: a new run (no ``variables`` in ``state.thermostat`` yet)
    starts at rest and stores the shared variables plus ``variables``; a resumed run keeps
    its own. Computes the first forces, checks the target, records the convergence data."""
    fresh = next(iter(variables)) not in state.thermostat
    if fresh:
        state.velocities = torch.zeros_like(state.velocities)
    force_field(state)
    check_target(state, target)
    if fresh:
        state.thermostat = {**start_variables(state), **variables}
    update_convergence(state, target, iteration=False)
    return state


def update_convergence(state: MDState, target: Target, *, iteration: bool) -> None:
    """Store ``fmax``, the objective and (after an ``iteration``) its relative change.

    Collective (one maximum over the ranks).
    """
    n = n_atoms_global(state)
    phi = cell_force(state, target, n)
    (atoms,) = global_max(state, row_norm_max(state.forces.detach()))
    largest = max(atoms, row_norm_max(phi))
    t = state.thermostat
    value = objective(state, target)
    if iteration:
        previous = float(t["objective"][0])
        scale = 0.5 * (abs(value) + abs(previous))
        change = abs(value - previous) / scale if scale > 0 else 0.0
        t["objective_change"] = torch.tensor([change], dtype=torch.float64)
    t["objective"] = torch.tensor([value], dtype=torch.float64)
    t["fmax"] = torch.tensor([largest], dtype=torch.float64)


def is_converged(state: MDState, *, fmax: float, etol: float) -> bool:
    """``fmax`` reached, or (``etol > 0``) the last relative objective change ≤ ``etol``."""
    t = state.thermostat
    if float(t["fmax"][0]) < fmax:
        return True
    return etol > 0 and float(t["objective_change"][0]) <= etol
