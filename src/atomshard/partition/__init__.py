"""Graph partitioning (Low-NN, METIS, grid), quality metrics and halo plans.

Plain numpy data only: this layer imports ``atomshard.graph`` and nothing above it.
"""

from atomshard.partition.plan import (
    PLAN_VERSION,
    HaloPlan,
    PlanError,
    build_halo_plan,
    build_halo_plans,
    check_plans,
)

__all__ = [
    "PLAN_VERSION",
    "HaloPlan",
    "PlanError",
    "build_halo_plan",
    "build_halo_plans",
    "check_plans",
]
