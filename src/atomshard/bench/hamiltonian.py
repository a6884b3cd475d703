"""Rank-side timing of the graph-parallel Hamiltonian forward pass (for
``benchmarks/bench_hamiltonian_scaling.py``; in the package so spawned ranks import it)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from atomshard.bench.timing import peak_rss_mib
from atomshard.comm import Communicator, ExchangeProfiler, HaloExchange
from atomshard.graph import Structure
from atomshard.models.hamiltonian.config import HamiltonianConfig
from atomshard.models.hamiltonian.model import HamiltonianModel
from atomshard.runtime import PartitionSpec
from atomshard.runtime.hamiltonian import HamiltonianPart, predict_part, split_hamiltonian

__all__ = ["time_hamiltonian_forward"]


def time_hamiltonian_forward(
    comm: Communicator,
    config: HamiltonianConfig,
    *,
    structure: Structure | None,
    partition: PartitionSpec = "lownn",
    transport: str = "auto",
    steps: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """``steps + 1`` forward passes (the first is warm-up) of a random-weight model.

    Every rank builds the same weights from ``seed``. Returns this rank's sizes, median
    step time, CPU time, the exchange profile (pack / send-recv / unpack / compute) and
    peak RSS.
    """
    torch.manual_seed(seed)
    model = HamiltonianModel(config).to(comm.device).eval()
    parts = None
    t0 = time.perf_counter()
    if comm.rank == 0:
        assert structure is not None
        parts = split_hamiltonian(structure, config.cutoff, comm.world_size, partition)
    split_s = time.perf_counter() - t0
    part = comm.scatter_objects(parts) if comm.world_size > 1 else parts[0]  # type: ignore[index]
    assert isinstance(part, HamiltonianPart)
    profiler = ExchangeProfiler()
    ex = HaloExchange(part.plan, comm, transport=transport, profiler=profiler)
    graph = part.graph(comm.device)
    times, cpu = [], []
    for _ in range(steps + 1):
        comm.barrier(what="step start")
        t1, c1 = time.perf_counter(), time.process_time()
        profiler.start_step()
        with torch.no_grad():
            predict_part(model, part, ex, graph=graph)
        profiler.end_step()
        cpu.append(time.process_time() - c1)
        times.append(time.perf_counter() - t1)
    kept = times[1:] or times
    return {
        "rank": comm.rank,
        "world_size": comm.world_size,
        "threads": torch.get_num_threads(),
        "n_owned": part.plan.n_owned,
        "n_halo": part.plan.n_halo,
        "n_peers": len(part.plan.peers),
        "n_owned_edges": part.n_owned_edges,
        "n_reverse_edges": graph.n_edges - part.n_owned_edges,
        "split_s": split_s,
        "warmup_s": times[0],
        "step_s": statistics.median(kept),
        "cpu_s": statistics.median(cpu[1:] or cpu),
        "profile": profiler.summary(skip=1),
        "peak_rss_mib": peak_rss_mib(),
    }
