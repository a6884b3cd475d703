"""Integrators as plain ``*_init(state, force_field, ...)`` / ``*_step(...)`` functions."""

from atomshard.md.integrators.langevin import langevin_init, langevin_step
from atomshard.md.integrators.nose_hoover import (
    nose_hoover_conserved,
    nose_hoover_init,
    nose_hoover_step,
)
from atomshard.md.integrators.npt import npt_conserved, npt_init, npt_step
from atomshard.md.integrators.nve import nve_init, nve_step

__all__ = [
    "langevin_init",
    "langevin_step",
    "nose_hoover_conserved",
    "nose_hoover_init",
    "nose_hoover_step",
    "npt_conserved",
    "npt_init",
    "npt_step",
    "nve_init",
    "nve_step",
]
