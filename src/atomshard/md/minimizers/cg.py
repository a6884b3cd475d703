"""Nonlinear conjugate gradients (Polak–Ribière+, secant line search), optionally with the cell.

| symbol | code | units |
|---|---|---|
| x, F | ``state.positions``, ``state.forces`` | Å, eV/Å |
| q, Φ | cell coordinate and force (:mod:`._objective`) | —, eV |
| h | search direction of the atoms (``state.velocities`` in the line search) | eV/Å |
| h_c | search direction of the cell: ``thermostat["cell_direction"]`` | eV |
| a | position along h (``x = x₀ + a h``) | Å²/eV |
| a_k | accepted ``a`` of the last iteration: ``thermostat["cg_alpha"]`` | Å²/eV |
| β | Polak–Ribière+ coefficient of the next direction: ``thermostat["cg_beta"]`` | — |
| φ'(a) = −(F·h + Φ·h_c) | ``slope`` (summed over ranks) | eV |

One iteration: the direction ``h = F + β h_prev`` (steepest descent ``h = F`` when β = 0
or when h is not downhill); a line search along it; then
``β = max(0, F_new·(F_new − F_old) / F_old·F_old)`` for the next one. The line search
evaluates forces at a trial ``a₁`` (the last accepted step, at most the step that moves
some atom — or row of q — by ``max_step`` Å), then at the secant root of the directional
derivative ``a₂ = a₁ φ'(0) / (φ'(0) − φ'(a₁))`` (exact for a quadratic), and halves ``a``
while the objective is above its start value (at most ``MAX_HALVINGS`` times). Two force
calls per iteration are usual. It uses forces, not energy differences, to place the
step, as LAMMPS's quadratic line search does, so it stays usable near the minimum.

Between iterations ``state.velocities`` holds the last displacement divided by the
config's ``dt`` (``a_k h / dt``): it carries ``h_prev`` through neighbour-list rebuilds
(where atoms migrate between ranks with their velocities) and restart files. The thermo
log's E_kin and T therefore describe that displacement, not thermal motion. When a rebuild
moved atoms between ranks during an iteration, ``F_old`` is no longer aligned with the
atoms and the next direction restarts from steepest descent (β = 0), the same on every rank.
``state.time`` advances by ``dt`` per iteration (an iteration count in fs).
"""

from __future__ import annotations

import torch

from atomshard.md.minimizers._objective import (
    MAX_STEP,
    MAX_STRAIN,
    Target,
    apply_strain,
    cell_force,
    global_max,
    n_atoms_global,
    objective,
    row_norm_max,
    start_minimizer,
    update_convergence,
)
from atomshard.md.state import ForceField, MDState

#: the line search halves the step at most this many times while the objective went up
MAX_HALVINGS = 6


def cg_init(
    state: MDState,
    force_field: ForceField,
    *,
    cell: str = "none",
    pressure: float = 0.0,
) -> MDState:
    """First forces; a new run starts with steepest descent (a resumed one keeps its
    variables). ``pressure`` in GPa; ``cell``: ``none``, ``iso``, ``aniso`` or ``tri``."""
    variables = {
        "cg_alpha": torch.tensor([0.0], dtype=torch.float64),
        "cg_beta": torch.tensor([0.0], dtype=torch.float64),
        "cell_direction": torch.zeros(3, 3, dtype=torch.float64),
    }
    return start_minimizer(state, force_field, Target.of(cell, pressure), variables)


def _dot(state: MDState, a: torch.Tensor, b: torch.Tensor, *cell: torch.Tensor) -> list[float]:
    """``[Σ a·b, Σ cellᵢ·cellⱼ ...]``: per-atom dot product summed over ranks, plus the
    cell products (pairs of ``cell`` tensors, global, added once)."""
    local = torch.stack([(a * b).sum()]).to("cpu", torch.float64)
    total = float(state.sum_over_ranks(local)[0])
    for x, y in zip(cell[::2], cell[1::2], strict=True):
        total += float((x * y).sum())
    return [total]


class _Line:
    """Positions (and cell) at ``x₀ + a h``, moved incrementally; collective calls."""

    def __init__(
        self, state: MDState, force_field: ForceField, target: Target, hc: torch.Tensor
    ) -> None:
        self.state, self.force_field, self.target, self.hc = state, force_field, target, hc
        self.n = n_atoms_global(state)
        self.a = 0.0

    def go(self, a: float) -> tuple[float, float]:
        """Move to ``a``, compute forces; ``(objective, directional derivative φ'(a))``."""
        state, delta = self.state, a - self.a
        state.positions = state.positions + delta * state.velocities
        if self.target.moves_cell:
            apply_strain(state, (delta / max(self.n, 1)) * self.hc)
        self.force_field(state)
        self.a = a
        phi = cell_force(state, self.target, self.n)
        (fh,) = _dot(state, state.forces.detach(), state.velocities, phi, self.hc)
        return objective(state, self.target), -fh


def cg_step(
    state: MDState,
    force_field: ForceField,
    *,
    dt: float,
    cell: str = "none",
    pressure: float = 0.0,
    max_step: float = MAX_STEP,
) -> MDState:
    """One CG iteration (a line search: usually two force calls)."""
    target = Target.of(cell, pressure)
    t = state.thermostat
    n = n_atoms_global(state)
    f_old = state.forces.detach().clone()
    phi_old = cell_force(state, target, n)
    alpha_prev, beta = float(t["cg_alpha"][0]), float(t["cg_beta"][0])
    if alpha_prev > 0 and beta > 0:
        h = f_old + (beta * dt / alpha_prev) * state.velocities
        hc = phi_old + beta * t["cell_direction"]
    else:
        h, hc = f_old.clone(), phi_old.clone()
    (fh,) = _dot(state, f_old, h, phi_old, hc)
    (ff_old,) = _dot(state, f_old, f_old, phi_old, phi_old)
    if fh <= 0:  # not downhill: steepest descent
        h, hc, fh = f_old.clone(), phi_old.clone(), ff_old
    restart = False
    line = _Line(state, force_field, target, hc)
    if fh > 0:
        (h_big,) = global_max(state, row_norm_max(h))
        h_big = max(h_big, row_norm_max(hc))
        a_max = max_step / h_big
        if target.moves_cell and float(hc.abs().max()) > 0:
            a_max = min(a_max, MAX_STRAIN * max(n, 1) / float(hc.abs().max()))
        a1 = min(alpha_prev, a_max) if alpha_prev > 0 else a_max
        state.velocities = h  # migrates with its atoms if a force call rebuilds
        ids = state.atom_ids.clone()
        e0, slope0 = objective(state, target), -fh
        e1, slope1 = line.go(a1)
        a2 = a1 * slope0 / (slope0 - slope1) if slope1 > slope0 else 2.0 * a1
        a2 = min(a2, a_max)
        e = e1
        if abs(a2 - a1) > 1e-3 * a1:
            e, _ = line.go(a2)
            if e > e0 and e1 < e:  # the secant overshot: the trial point was better
                e, _ = line.go(a1)
                restart = True
        halvings = 0
        while e > e0 and halvings < MAX_HALVINGS:
            e, _ = line.go(0.5 * line.a)
            halvings += 1
            restart = True
        moved = torch.tensor(
            [0.0 if torch.equal(ids, state.atom_ids) else 1.0], dtype=torch.float64
        )
        if float(state.sum_over_ranks(moved)[0]) > 0:
            restart = True  # F_old's rows belong to the atoms before the migration
    beta_next = 0.0
    phi_new = cell_force(state, target, n)
    if not restart and ff_old > 0:
        f_new = state.forces.detach()
        (num,) = _dot(state, f_new, f_new - f_old, phi_new, phi_new - phi_old)
        beta_next = max(0.0, num / ff_old)
    state.velocities = state.velocities * (line.a / dt) if fh > 0 else state.velocities * 0.0
    t["cg_alpha"] = torch.tensor([line.a], dtype=torch.float64)
    t["cg_beta"] = torch.tensor([beta_next], dtype=torch.float64)
    t["cell_direction"] = hc
    state.step += 1
    state.time += dt
    update_convergence(state, target, iteration=True)
    return state
