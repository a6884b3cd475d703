"""Rank-side training loops for the data-parallel numerics and throughput study.

:func:`train_steps` runs ``n_steps`` optimiser steps on this rank's shards of the same
global batches the trainer would draw and returns the global loss of every step and
the time of each, so ``benchmarks/bench_train.py`` can compare loss trajectories across
strategies, reruns and seeds (the SI's DDP numerics study) and measure throughput.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from atomshard.comm import Communicator, NullCommunicator
from atomshard.models.potential import NequIPConfig, NequIPPotential
from atomshard.train.data import LabelledStructure
from atomshard.train.loss import LossWeights
from atomshard.train.parallel import (
    ForceModel,
    GradientSync,
    backward_to_parameters,
    epoch_batches,
    shard_loss,
)
from atomshard.utils.dtypes import parse_dtype


def train_steps(
    comm: Communicator | None,
    frames: Sequence[LabelledStructure],
    config: NequIPConfig,
    *,
    strategy: str = "allreduce",
    seed: int = 0,
    n_steps: int = 10,
    batch_size: int = 4,
    lr: float = 0.002,
    threads: int = 0,
    compute_dtype: str | None = None,
) -> dict[str, Any]:
    """Train ``n_steps`` AdamW steps; per-step global losses and wall times.

    Returns:
        ``{"loss": [n_steps] floats, "step_s": [n_steps] seconds, "structures": int}``;
        the losses are summed over ranks, so they are the global-batch losses.
        ``compute_dtype="bfloat16"`` trains a float32 model's body in bf16
        (:class:`ForceModel`).
    """
    comm = comm or NullCommunicator()
    if threads:
        torch.set_num_threads(threads)
    rank, world = int(getattr(comm, "rank", 0)), int(getattr(comm, "world_size", 1))
    torch.manual_seed(seed)
    model = NequIPPotential.from_config(config)
    low = parse_dtype(compute_dtype, what="compute_dtype")
    fm = ForceModel(model, stress=False, compute_dtype=low)
    sync = GradientSync(strategy, comm, fm)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-6)
    samples = [f.with_edges(config.cutoff) for f in frames]
    weights = LossWeights(1.0, 1.0, 0.0)
    losses: list[float] = []
    times: list[float] = []
    structures = 0
    epoch = 0
    while len(losses) < n_steps:
        for indices in epoch_batches(len(samples), batch_size, seed=seed, epoch=epoch,
                                     world_size=world):  # fmt: skip
            if len(losses) >= n_steps:
                break
            comm.barrier(what="step start")
            t0 = time.perf_counter()
            global_batch = [samples[i] for i in indices]
            loss = shard_loss(sync.forward_module, global_batch, rank, world, weights)
            opt.zero_grad(set_to_none=True)
            backward_to_parameters(loss * sync.loss_scale, sync.module)
            sync.after_backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            total = comm.all_reduce_sum(loss.detach().to(torch.float64), what="step loss")
            losses.append(float(total))
            structures += len(indices)
        epoch += 1
    return {"loss": losses, "step_s": times, "structures": structures}
