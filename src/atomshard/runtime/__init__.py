"""The graph-parallel runtime: a potential evaluated over ranks with the serial numbers.

- :func:`evaluate_distributed` spawns N local ranks (``atomshard eval --ranks N``).
- :func:`evaluate_frames` / :class:`DistributedEvaluator` run inside an existing group
  (torchrun, srun, or serially with a :class:`~atomshard.comm.NullCommunicator`).
- :class:`DistributedCalculator` is the ASE calculator for torchrun scripts.
- :func:`build_local_part` / :func:`migrate` rebuild a rank's part by messages between
  ranks (no rank holds arrays sized by the whole system); distributed MD
  (:mod:`atomshard.md`) calls them at neighbour-list rebuilds.
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
from atomshard.runtime._local_rebuild import (
    LocalBuild,
    OwnedAtoms,
    build_local_part,
    migrate,
)
from atomshard.runtime._partition import PARTITION_NAMES, PartitionSpec, partition_atoms

__all__ = [
    "PARTITION_NAMES",
    "DistributedCalculator",
    "DistributedEvaluator",
    "FrameResult",
    "LocalBuild",
    "LocalPart",
    "OwnedAtoms",
    "PartitionSpec",
    "as_structure",
    "build_local_part",
    "evaluate_distributed",
    "evaluate_for_command",
    "evaluate_frames",
    "format_profile",
    "frame_result_dict",
    "load_potential",
    "migrate",
    "partition_atoms",
    "split_structure",
    "write_profile",
]
