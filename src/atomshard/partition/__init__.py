"""Graph partitioning (Low-NN, METIS, grid), quality metrics and halo plans.

Plain numpy data only: this layer imports ``atomshard.graph`` and nothing above it.
"""

from atomshard.partition._input import (
    PartitionInput,
    PartitionWarning,
    as_partition_input,
    lattice_frame,
)
from atomshard.partition.api import METHODS, PARTITIONERS, compare, partition
from atomshard.partition.grid import grid_layout, grid_partition, processor_grid
from atomshard.partition.lownn import lownn_layout, lownn_partition
from atomshard.partition.metis import metis_partition
from atomshard.partition.metrics import (
    CommCostModel,
    PartitionMetrics,
    exchange_pairs,
    partition_metrics,
)
from atomshard.partition.plan import (
    PLAN_VERSION,
    HaloPlan,
    PlanError,
    build_halo_plan,
    build_halo_plans,
    check_plans,
)
from atomshard.partition.regions import (
    REGION_PARTITIONERS,
    Regions,
    grid_regions,
    lownn_regions,
)

__all__ = [
    "METHODS",
    "PARTITIONERS",
    "PLAN_VERSION",
    "REGION_PARTITIONERS",
    "CommCostModel",
    "HaloPlan",
    "PartitionInput",
    "PartitionMetrics",
    "PartitionWarning",
    "PlanError",
    "Regions",
    "as_partition_input",
    "build_halo_plan",
    "build_halo_plans",
    "check_plans",
    "compare",
    "exchange_pairs",
    "grid_layout",
    "grid_partition",
    "grid_regions",
    "lattice_frame",
    "lownn_layout",
    "lownn_partition",
    "lownn_regions",
    "metis_partition",
    "partition",
    "partition_metrics",
    "processor_grid",
]
