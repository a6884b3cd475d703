"""FIRE, the fast inertial relaxation engine (Bitzek et al., PRL 97, 170201, 2006).

Damped dynamics with the atoms' masses, steered towards the force and restarted from rest
whenever it goes uphill; optionally with the cell (:mod:`._objective`: the generalised
cell coordinate ``q = N ε`` with force Φ; it moves like an atom of the mean atomic mass,
its force in eV read as eV/Å, so its steps are limited like the atoms' by ``max_step``).

| symbol | code | units |
|---|---|---|
| x, v | ``state.positions``, ``state.velocities`` | Å, Å/fs |
| F, m | ``state.forces``, ``state.masses`` | eV/Å, amu |
| q̇, Φ | ``thermostat["cell_velocity"]``, :func:`._objective.cell_force` | Å/fs (q read as Å), eV |
| Δt (adaptive) | ``thermostat["fire_dt"]`` | fs |
| α | ``thermostat["fire_alpha"]`` | — |
| steps since P ≤ 0 | ``thermostat["fire_n_pos"]`` | — |
| P = F·v | ``power`` (atoms and cell, summed over ranks) | eV Å/fs |
| N_min, f_inc, f_dec | ``N_MIN``, ``F_INC``, ``F_DEC`` | — |
| α_start, f_α | ``ALPHA_START``, ``F_ALPHA`` | — |
| Δt_max | ``DT_MAX_FACTOR`` × the config's ``dt`` | fs |

One iteration (one force call): ``P = F·v``; if ``P > 0``: ``v ← (1−α) v + α |v| F/|F|``
and, after more than ``N_min`` such steps in a row, ``Δt ← min(f_inc Δt, Δt_max)``,
``α ← f_α α``; if ``P < 0``: ``v ← 0``, ``Δt ← f_dec Δt``, ``α ← α_start``. Then
``v ← v + Δt F/m``, ``Δx = Δt v`` scaled down so that no atom (and no row of Δq) moves more
than ``max_step`` Å, ``x ← x + Δx``, the cell strained by ``Δq / N`` (atoms move with it),
and new forces. ``state.time`` advances by Δt (FIRE's pseudo-time), ``state.step`` by one.
All decisions use sums and maxima over the ranks, so every rank takes the same ones.
"""

from __future__ import annotations

import math

import torch

from atomshard.md.minimizers._objective import (
    MAX_STEP,
    MAX_STRAIN,
    Target,
    apply_strain,
    cell_force,
    global_max,
    n_atoms_global,
    row_norm_max,
    start_minimizer,
    update_convergence,
)
from atomshard.md.state import ForceField, MDState
from atomshard.units import ACCEL

N_MIN = 5
F_INC = 1.1
F_DEC = 0.5
ALPHA_START = 0.1
F_ALPHA = 0.99
DT_MAX_FACTOR = 10.0


def fire_init(
    state: MDState,
    force_field: ForceField,
    *,
    dt: float,
    cell: str = "none",
    pressure: float = 0.0,
) -> MDState:
    """First forces; a new run starts at rest with ``Δt = dt`` (a resumed one keeps its
    variables). ``pressure`` in GPa; ``cell``: ``none``, ``iso``, ``aniso`` or ``tri``."""
    variables = {
        "fire_dt": torch.tensor([float(dt)], dtype=torch.float64),
        "fire_alpha": torch.tensor([ALPHA_START], dtype=torch.float64),
        "fire_n_pos": torch.tensor([0.0], dtype=torch.float64),
        "cell_velocity": torch.zeros(3, 3, dtype=torch.float64),
    }
    return start_minimizer(state, force_field, Target.of(cell, pressure), variables)


def fire_step(
    state: MDState,
    force_field: ForceField,
    *,
    dt: float,
    cell: str = "none",
    pressure: float = 0.0,
    max_step: float = MAX_STEP,
) -> MDState:
    """One FIRE iteration (one force call); ``dt`` is the starting Δt (Δt_max = 10 dt)."""
    target = Target.of(cell, pressure)
    t = state.thermostat
    n = n_atoms_global(state)
    f, v, m = state.forces.detach(), state.velocities, state.masses
    local = torch.stack([(f * v).sum(), (f * f).sum(), (v * v).sum(), m.sum()]).to(
        "cpu", torch.float64
    )
    sums = state.sum_over_ranks(local)
    phi = cell_force(state, target, n)
    vc = t["cell_velocity"]
    # the cell's terms are global already: added once, after the sum over ranks
    power = float(sums[0]) + float((phi * vc).sum())
    f_norm = math.sqrt(float(sums[1]) + float((phi * phi).sum()))
    v_norm = math.sqrt(float(sums[2]) + float((vc * vc).sum()))
    step_dt, alpha = float(t["fire_dt"][0]), float(t["fire_alpha"][0])
    n_pos = int(t["fire_n_pos"][0])
    if power > 0:
        if f_norm > 0:
            mix = alpha * v_norm / f_norm
            v = (1.0 - alpha) * v + mix * f
            vc = (1.0 - alpha) * vc + mix * phi
        if n_pos > N_MIN:
            step_dt = min(step_dt * F_INC, DT_MAX_FACTOR * dt)
            alpha *= F_ALPHA
        n_pos += 1
    elif power < 0:  # uphill: stop, shorten the step, steer harder (P = 0: at rest, go on)
        v = torch.zeros_like(v)
        vc = torch.zeros_like(vc)
        step_dt *= F_DEC
        alpha = ALPHA_START
        n_pos = 0
    v = v + (step_dt * ACCEL) * f / m[:, None]
    dx = step_dt * v
    dq = torch.zeros(3, 3, dtype=torch.float64)
    if target.moves_cell:
        cell_mass = float(sums[3]) / max(n, 1)
        vc = vc + (step_dt * ACCEL / cell_mass) * phi
        dq = step_dt * vc
    (largest,) = global_max(state, row_norm_max(dx))
    largest = max(largest, row_norm_max(dq))
    if largest > max_step:
        dx = dx * (max_step / largest)
        dq = dq * (max_step / largest)
    state.velocities = v
    state.positions = state.positions + dx
    if target.moves_cell:
        strain = dq / max(n, 1)
        biggest = float(strain.abs().max())
        if biggest > MAX_STRAIN:
            strain = strain * (MAX_STRAIN / biggest)
        apply_strain(state, strain)
    force_field(state)
    state.step += 1
    state.time += step_dt
    t["fire_dt"] = torch.tensor([step_dt], dtype=torch.float64)
    t["fire_alpha"] = torch.tensor([alpha], dtype=torch.float64)
    t["fire_n_pos"] = torch.tensor([float(n_pos)], dtype=torch.float64)
    t["cell_velocity"] = vc
    update_convergence(state, target, iteration=True)
    return state
