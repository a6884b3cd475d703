"""The graph-parallel runtime: a potential evaluated over ranks with the serial numbers.

- :func:`evaluate_distributed` spawns N local ranks (``atomshard eval --ranks N``).
- :func:`evaluate_frames` / :class:`DistributedEvaluator` run inside an existing group
  (torchrun, srun, or serially with a :class:`~atomshard.comm.NullCommunicator`).
- :class:`DistributedCalculator` is the ASE calculator for torchrun scripts.
- Hamiltonian model (imported on first use): :func:`predict_distributed` (``atomshard
  predict --ranks N``), :func:`fit_distributed` / :func:`train_distributed` (full-batch
  training on one structure), :func:`split_hamiltonian`, :func:`predict_part`, the
  streaming merges :func:`merge_block_parts` / :func:`merge_csr_parts` and
  :func:`eigenvalues_near` (docs/hamiltonian.md, "Distributed prediction and training").
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

#: Hamiltonian entry points, imported lazily (they pull in the model and h5py)
_LAZY = {
    "HamiltonianPart": "_hamiltonian",
    "fit_distributed": "_hamiltonian",
    "predict_part": "_hamiltonian",
    "split_hamiltonian": "_hamiltonian",
    "train_distributed": "_hamiltonian",
    "PredictOptions": "_hamiltonian_command",
    "predict_distributed": "_hamiltonian_command",
    "tile_blockset": "_hamiltonian_command",
    "eigenvalues_near": "_hamiltonian_output",
    "merge_block_parts": "_hamiltonian_output",
    "merge_csr_parts": "_hamiltonian_output",
    "read_csr": "_hamiltonian_output",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"atomshard.runtime.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'atomshard.runtime' has no attribute {name!r}")


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
