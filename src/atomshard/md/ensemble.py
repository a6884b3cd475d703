"""Dispatch from an :class:`~atomshard.md.config.MDConfig` to its ensemble's functions.

The one driver (:func:`atomshard.md.run_md`, any rank count) makes only these calls, so
an ensemble or a minimiser is added here and in ``md/integrators/`` (its
``*_init``/``*_step`` functions): ``ensemble_init`` (first forces, extra variables),
``ensemble_step`` (one step or iteration), ``converged`` (minimisers: stop now?) and
``conserved_energy`` (the thermo log's conserved column).
"""

from __future__ import annotations

from atomshard.md.config import MINIMIZERS, MDConfig
from atomshard.md.integrators import (
    langevin_init,
    langevin_step,
    nose_hoover_conserved,
    nose_hoover_init,
    nose_hoover_step,
    npt_conserved,
    npt_init,
    npt_step,
    nve_init,
    nve_step,
)
from atomshard.md.minimizers import (
    minimizer_converged,
    minimizer_init,
    minimizer_objective,
    minimizer_step,
)
from atomshard.md.state import ForceField, MDState


def ensemble_init(state: MDState, force_field: ForceField, config: MDConfig) -> MDState:
    """Initial forces (and thermostat variables) for ``config.ensemble``."""
    if config.ensemble in MINIMIZERS:
        return minimizer_init(state, force_field, config)
    if config.ensemble == "nve":
        return nve_init(state, force_field)
    if config.ensemble == "langevin":
        return langevin_init(state, force_field)
    if config.ensemble == "npt":
        return npt_init(
            state,
            force_field,
            temperature=config.temperature,
            tdamp=config.tdamp,
            pdamp=config.pdamp,
            barostat=config.barostat,
            chain=config.chain,
        )
    return nose_hoover_init(
        state, force_field, temperature=config.temperature, tdamp=config.tdamp, chain=config.chain
    )


def ensemble_step(state: MDState, force_field: ForceField, config: MDConfig) -> MDState:
    """One step of ``config.ensemble`` with ``config.dt``."""
    if config.ensemble in MINIMIZERS:
        return minimizer_step(state, force_field, config)
    if config.ensemble == "nve":
        return nve_step(state, force_field, dt=config.dt)
    if config.ensemble == "langevin":
        return langevin_step(
            state,
            force_field,
            dt=config.dt,
            temperature=config.temperature,
            friction=config.friction,
            seed=config.seed,
        )
    if config.ensemble == "npt":
        return npt_step(
            state,
            force_field,
            dt=config.dt,
            temperature=config.temperature,
            pressure=config.pressure,
            tdamp=config.tdamp,
            pdamp=config.pdamp,
            barostat=config.barostat,
        )
    return nose_hoover_step(
        state, force_field, dt=config.dt, temperature=config.temperature, tdamp=config.tdamp
    )


def converged(state: MDState, config: MDConfig) -> bool | None:
    """Whether a minimiser has converged (the same answer on every rank); None for MD.

    The driver asks after every step and stops the run when this is True.
    """
    if config.ensemble in MINIMIZERS:
        return minimizer_converged(state, config)
    return None


def conserved_energy(state: MDState, config: MDConfig) -> float:
    """The quantity the ensemble conserves (E_tot, or the Nosé–Hoover extended energy), eV.

    For a minimiser: what it minimises (E, or the enthalpy E + P V with a cell relaxation).
    """
    if config.ensemble in MINIMIZERS:
        return minimizer_objective(state, config)
    if config.ensemble == "nose-hoover":
        return nose_hoover_conserved(state, temperature=config.temperature, tdamp=config.tdamp)
    if config.ensemble == "npt":
        return npt_conserved(
            state,
            temperature=config.temperature,
            pressure=config.pressure,
            tdamp=config.tdamp,
            pdamp=config.pdamp,
            barostat=config.barostat,
        )
    return state.energy + state.kinetic_energy()
