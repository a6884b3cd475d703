"""The graph-parallel runtime: a potential evaluated over ranks with the serial numbers.

- :func:`evaluate_distributed` spawns N local ranks (``atomshard eval --ranks N``).
- :func:`evaluate_frames` / :class:`DistributedEvaluator` run inside an existing group
  (torchrun, srun, or serially with a :class:`~atomshard.comm.NullCommunicator`).
- :class:`DistributedCalculator` is the ASE calculator for torchrun scripts.
- :mod:`atomshard.runtime.hamiltonian`: the Hamiltonian model split over ranks
  (:func:`~atomshard.runtime.hamiltonian.split_hamiltonian`,
  :func:`~atomshard.runtime.hamiltonian.predict_part`; docs/hamiltonian.md).
"""

from atomshard.runtime._api import (
    evaluate_distributed,
    format_profile,
    load_potential,
    write_profile,
)
from atomshard.runtime._calculator import DistributedCalculator
from atomshard.runtime._command import evaluate_for_command, frame_result_dict
from atomshard.runtime._evaluate import (
    DistributedEvaluator,
    FrameResult,
    LocalPart,
    as_structure,
    evaluate_frames,
    split_structure,
)
from atomshard.runtime._md import (
    DistributedForceField,
    DistributedMDState,
    distributed_state,
    empty_state,
    run_md,
)
from atomshard.runtime._md_command import gather_state, run_md_distributed
from atomshard.runtime._partition import PARTITION_NAMES, PartitionSpec, partition_atoms

__all__ = [
    "PARTITION_NAMES",
    "DistributedCalculator",
    "DistributedEvaluator",
    "DistributedForceField",
    "DistributedMDState",
    "FrameResult",
    "LocalPart",
    "PartitionSpec",
    "as_structure",
    "distributed_state",
    "empty_state",
    "evaluate_distributed",
    "evaluate_for_command",
    "evaluate_frames",
    "format_profile",
    "frame_result_dict",
    "gather_state",
    "load_potential",
    "partition_atoms",
    "run_md",
    "run_md_distributed",
    "split_structure",
    "write_profile",
]
