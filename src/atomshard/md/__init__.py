"""Molecular dynamics: state, integrators, force fields, the run driver, ASE calculator."""

from atomshard.md.config import MDConfig
from atomshard.md.driver import MDResult, run_md
from atomshard.md.forcefield import SerialForceField
from atomshard.md.integrators import (
    langevin_init,
    langevin_step,
    nose_hoover_conserved,
    nose_hoover_init,
    nose_hoover_step,
    nve_init,
    nve_step,
)
from atomshard.md.state import ForceField, MDState, maxwell_boltzmann, state_from_ase

__all__ = [
    "ForceField",
    "MDConfig",
    "MDResult",
    "MDState",
    "SerialForceField",
    "langevin_init",
    "langevin_step",
    "maxwell_boltzmann",
    "nose_hoover_conserved",
    "nose_hoover_init",
    "nose_hoover_step",
    "nve_init",
    "nve_step",
    "run_md",
    "state_from_ase",
]
