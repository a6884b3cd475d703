"""One signature for every partitioner, a registry by name, and the ``auto`` choice."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from atomshard.errors import InputError
from atomshard.partition._input import as_partition_input, check_n_parts
from atomshard.partition.grid import grid_partition
from atomshard.partition.lownn import lownn_partition
from atomshard.partition.metis import metis_partition
from atomshard.partition.metrics import CommCostModel, PartitionMetrics, partition_metrics

#: name -> ``fn(graph: PartitionInput, n_parts: int) -> part [n_atoms] int64``
PARTITIONERS: dict[str, Callable[..., np.ndarray]] = {
    "lownn": lownn_partition,
    "metis": metis_partition,
    "grid": grid_partition,
}
METHODS = (*PARTITIONERS, "auto")


def _lookup(method: str) -> Callable[..., np.ndarray]:
    try:
        return PARTITIONERS[method.lower()]
    except (KeyError, AttributeError):
        raise InputError(
            f"unknown partition method {method!r}; choose one of {', '.join(METHODS)}"
        ) from None


def partition(
    graph: Any,
    n_parts: int,
    *,
    method: str = "lownn",
    cost_model: CommCostModel | None = None,
) -> np.ndarray:
    """Split the atoms of ``graph`` into ``n_parts`` parts.

    Args:
        graph: an ``AtomicGraph``, a :class:`PartitionInput` or a mapping of its fields.
        n_parts: number of parts, ``>= 1``; more than atoms leaves parts empty (warning).
        method: ``"lownn"``, ``"metis"``, ``"grid"`` or ``"auto"`` (runs all three and
            keeps the lowest :class:`CommCostModel` estimate).
        cost_model: used by ``lownn`` (axis choice) and ``auto`` (ranking).

    Returns:
        ``[n_atoms]`` int64, ``part[i]`` in ``[0, n_parts)``.
    """
    if isinstance(method, str) and method.lower() == "auto":
        results = compare(graph, n_parts, methods=tuple(PARTITIONERS), cost_model=cost_model)
        best = min(results, key=lambda name: results[name][1].estimated_time_s)
        return results[best][0]
    fn = _lookup(method)
    inp = as_partition_input(graph)
    if fn is lownn_partition:
        return lownn_partition(inp, n_parts, cost_model=cost_model)
    return fn(inp, n_parts)


def compare(
    graph: Any,
    n_parts: int,
    *,
    methods: Sequence[str] = tuple(PARTITIONERS),
    cost_model: CommCostModel | None = None,
) -> dict[str, tuple[np.ndarray, PartitionMetrics]]:
    """Run several partitioners on one graph: ``{method: (part, metrics)}``.

    ``metrics.partition_time_s`` is the wall time of the partitioner alone (not of the
    metrics). ``"auto"`` in ``methods`` adds the best of the others under that name.
    """
    inp = as_partition_input(graph)
    n_parts = check_n_parts(n_parts, inp.n_atoms)
    cost = cost_model or CommCostModel()
    out: dict[str, tuple[np.ndarray, PartitionMetrics]] = {}
    for name in [m.lower() for m in methods if m.lower() != "auto"]:
        fn = _lookup(name)
        start = time.perf_counter()
        part = (
            lownn_partition(inp, n_parts, cost_model=cost)
            if fn is lownn_partition
            else fn(inp, n_parts)
        )
        elapsed = time.perf_counter() - start
        out[name] = (
            part,
            partition_metrics(
                part,
                inp.src,
                inp.dst,
                n_parts,
                method=name,
                partition_time_s=elapsed,
                cost_model=cost,
            ),
        )
    if any(m.lower() == "auto" for m in methods):
        for name in PARTITIONERS:
            if name not in out:
                out.update(compare(inp, n_parts, methods=(name,), cost_model=cost))
        best = min(PARTITIONERS, key=lambda name: out[name][1].estimated_time_s)
        part, m = out[best]
        out["auto"] = (part, PartitionMetrics(**{**m.__dict__, "method": f"auto:{best}"}))
    return out
