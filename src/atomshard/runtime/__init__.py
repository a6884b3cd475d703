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
- :mod:`atomshard.runtime.blocks`: a system too large for memory evaluated exactly, block
  by block, with any model (:func:`evaluate`, :func:`compute_properties_in_blocks`); on
  ranks whose parts are too large, :func:`deepen` gives each rank its whole receptive
  field and :func:`evaluate_deep` evaluates the part block by block.
"""

from atomshard.runtime._api import (
    evaluate_distributed,
    format_profile,
    load_potential,
    write_profile,
)
from atomshard.runtime._calculator import DistributedCalculator, PotentialCalculator
from atomshard.runtime._deep import (
    BlockMode,
    DeepPart,
    deep_graph,
    deepen,
    evaluate_deep,
    plan_block_mode,
)
from atomshard.runtime._evaluate import (
    DistributedEvaluator,
    FrameResult,
    LocalPart,
    as_structure,
    evaluate_frames,
    frame_result_dict,
    split_structure,
)
from atomshard.runtime._local_rebuild import (
    LocalBuild,
    OwnedAtoms,
    build_local_part,
    migrate,
)
from atomshard.runtime._partition import PARTITION_NAMES, PartitionSpec, partition_atoms
from atomshard.runtime.blocks import (
    Block,
    auto_max_atoms,
    block_graph,
    compute_properties_in_blocks,
    evaluate,
    iter_blocks,
    plan_blocks,
    resolve_max_atoms,
)

__all__ = [
    "PARTITION_NAMES",
    "Block",
    "BlockMode",
    "DeepPart",
    "DistributedCalculator",
    "DistributedEvaluator",
    "FrameResult",
    "LocalBuild",
    "LocalPart",
    "OwnedAtoms",
    "PartitionSpec",
    "PotentialCalculator",
    "as_structure",
    "auto_max_atoms",
    "block_graph",
    "build_local_part",
    "compute_properties_in_blocks",
    "deep_graph",
    "deepen",
    "evaluate",
    "evaluate_deep",
    "evaluate_distributed",
    "evaluate_frames",
    "format_profile",
    "frame_result_dict",
    "iter_blocks",
    "load_potential",
    "migrate",
    "partition_atoms",
    "plan_block_mode",
    "plan_blocks",
    "resolve_max_atoms",
    "split_structure",
    "write_profile",
]
