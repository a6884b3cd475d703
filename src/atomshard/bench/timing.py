"""Rank-side timing of the halo exchange and of a potential evaluation (for
``benchmarks/bench_exchange.py`` and ``bench_scaling.py``).

They live in the package (not the scripts) so that spawned ranks can import them.
Every timed region starts after a barrier; a rank's time is its own wall time, and the
benchmarks report the slowest rank (the one everybody waits for).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any

import torch

from atomshard.comm import Communicator, ExchangeProfiler, HaloExchange
from atomshard.graph import Structure
from atomshard.models.base import Potential
from atomshard.runtime import (
    DistributedEvaluator,
    LocalPart,
    PartitionSpec,
    evaluate_deep,
    load_potential,
    plan_block_mode,
    split_structure,
)
from atomshard.utils.dtypes import parse_dtype

__all__ = ["peak_rss_mib", "time_evaluation", "time_exchange"]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def _scatter(
    comm: Communicator, structure: Structure | None, cutoff: float, partition: PartitionSpec
) -> LocalPart:
    parts = None
    if comm.rank == 0:
        assert structure is not None
        parts = split_structure(structure, cutoff, comm.world_size, partition)
    if comm.world_size == 1:
        assert parts is not None
        return parts[0]
    return comm.scatter_objects(parts)


def time_exchange(
    comm: Communicator,
    *,
    structure: Structure | None,
    cutoff: float,
    partition: PartitionSpec,
    widths: list[int],
    transports: list[str],
    dtype: str = "float32",
    repeats: int = 20,
) -> dict[str, Any]:
    """Median forward and backward exchange times per (transport, width) on this rank.

    Shapes:
        features: ``[n_local, width]`` of ``dtype``; ``width`` counts scalars per atom.
    """
    local = _scatter(comm, structure, cutoff, partition)
    torch_dtype = parse_dtype(dtype, what="dtype")
    out: dict[str, Any] = {
        "rank": comm.rank,
        "n_owned": local.plan.n_owned,
        "n_halo": local.plan.n_halo,
        "n_peers": len(local.plan.peers),
        "rows_sent": int(sum(len(v) for v in local.plan.send.values())),
        "runs": [],
    }
    for transport in transports:
        ex = HaloExchange(local.plan, comm, transport=transport)
        for width in widths:
            x = torch.randn(local.plan.n_local, width, dtype=torch_dtype, device=comm.device)
            fwd, bwd = [], []
            for i in range(repeats + 2):  # two warm-up rounds (buffers, connections)
                comm.barrier()
                t0 = time.perf_counter()
                ex.forward_exchange(x)
                t1 = time.perf_counter()
                ex.reverse_exchange(x)
                t2 = time.perf_counter()
                if i >= 2:
                    fwd.append(t1 - t0)
                    bwd.append(t2 - t1)
            out["runs"].append(
                {
                    "transport": ex.transport,
                    "width": width,
                    "forward_s": statistics.median(fwd),
                    "backward_s": statistics.median(bwd),
                    "forward_min_s": min(fwd),
                    "forward_max_s": max(fwd),
                }
            )
    return out


def time_evaluation(
    comm: Communicator,
    model: str | Potential,
    *,
    structure: Structure | None,
    partition: PartitionSpec,
    transport: str = "auto",
    steps: int = 3,
    dtype: torch.dtype | None = None,
    recompute: bool | str | None = None,
    overlap: bool | None = None,
    max_atoms: int | str | None = None,
) -> dict[str, Any]:
    """Energy + forces + stress ``steps + 1`` times (the first is warm-up) on this rank.

    With ``max_atoms`` (``--block-atoms``) and a part larger than that, every rank
    evaluates its part block by block (:func:`atomshard.runtime.plan_block_mode`; the
    deep halo is built once, as at a rebuild, and not timed).

    The plan is built once (as in MD between neighbour-list rebuilds); each step is a full
    evaluation with the per-layer exchanges. ``recompute`` pins the fused convolution's
    backward mode (True, False or ``"auto"``; None: the model's setting), so that runs on
    different rank counts compare the same work; ``overlap`` switches the overlap of each
    layer's exchange with its interior nodes (None: the model's setting).
    """
    potential = load_potential(model, dtype=dtype).to(comm.device)
    set_convolution = getattr(potential, "set_convolution", None)
    if set_convolution is not None:  # other models: no such modes
        set_convolution(recompute=recompute, overlap=overlap)
    rss_model = peak_rss_mib()
    local = _scatter(comm, structure, float(potential.cutoff), partition)
    profiler = ExchangeProfiler()
    ev = DistributedEvaluator(potential, comm, transport=transport, profiler=profiler)
    overlap_plan = getattr(potential, "overlap_plan", None)
    ex = ev.exchange_for(local.plan)
    plan = overlap_plan(local.graph(comm.device), ex) if overlap_plan else None
    mode, graph = None, local.graph(comm.device)
    if max_atoms is not None:
        mode = plan_block_mode(potential, comm, local.plan, graph, max_atoms, transport=transport)
    times, cpu = [], []
    energy = 0.0
    for _ in range(steps + 1):
        comm.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        if mode is None:
            energy = float(ev.evaluate_local(local).energy)
        else:
            owned = graph.positions[: local.plan.n_owned]
            energy = float(evaluate_deep(potential, mode, owned, graph.cell, graph.pbc).energy)
        cpu.append(time.process_time() - c0)
        times.append(time.perf_counter() - t0)
    summary = profiler.summary(skip=1)
    return {
        "rank": comm.rank,
        "world_size": comm.world_size,
        "threads": torch.get_num_threads(),
        "n_owned": local.plan.n_owned,
        "n_halo": local.plan.n_halo,
        "n_local_edges": local.plan.n_local_edges,
        # owned atoms none of whose edges reads a halo row (computed while it is in flight)
        "n_interior": None if plan is None else plan.n_inner_nodes,
        "warmup_s": times[0],
        "step_s": statistics.median(times[1:]),
        "step_min_s": min(times[1:]),
        "step_max_s": max(times[1:]),
        # CPU seconds of this process (all its threads) per step: unlike wall time it does
        # not grow when other jobs share the cores
        "cpu_s": statistics.median(cpu[1:]),
        "profile": summary,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_model_mib": rss_model,
        "energy": energy,
        "block_mode": mode is not None,
        "n_deep": None if mode is None else mode.deep.n_local,
        "n_blocks": None if mode is None else int((mode.part.unique() >= 0).sum()),
    }
