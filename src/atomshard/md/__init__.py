"""Molecular dynamics: state, ensembles, the one run driver (serial = one rank), force
fields (serial and distributed), momentum removal, observers, ASE calculator."""

from atomshard.md.config import MDConfig
from atomshard.md.distributed import (
    DistributedForceField,
    DistributedMDState,
    distributed_state,
    empty_state,
)
from atomshard.md.driver import MDResult, md_on_rank, run_md, run_md_on_ranks
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
from atomshard.md.momentum import zero_momentum
from atomshard.md.observers import Observer
from atomshard.md.restart import gather_state, load_restart, save_restart
from atomshard.md.state import ForceField, MDState, maxwell_boltzmann, state_from_ase

__all__ = [
    "DistributedForceField",
    "DistributedMDState",
    "ForceField",
    "MDConfig",
    "MDResult",
    "MDState",
    "Observer",
    "SerialForceField",
    "distributed_state",
    "empty_state",
    "gather_state",
    "langevin_init",
    "langevin_step",
    "load_restart",
    "maxwell_boltzmann",
    "md_on_rank",
    "nose_hoover_conserved",
    "nose_hoover_init",
    "nose_hoover_step",
    "nve_init",
    "nve_step",
    "run_md",
    "run_md_on_ranks",
    "save_restart",
    "state_from_ase",
    "zero_momentum",
]
