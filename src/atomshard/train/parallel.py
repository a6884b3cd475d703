"""Data parallelism: who trains on what, and how gradients are summed over ranks.

Every rank draws the same global batches (the order is a function of the seed and the
epoch only) and takes a strided shard of each: ``batch[rank::world_size]``. Validation
frames are split the same way without padding, so no frame is counted twice; error
sums are all-reduced. Gradients are summed over ranks by one of two strategies:

- ``allreduce``: after ``backward`` every gradient is packed into one flat buffer, summed
  with a single all-reduce and unpacked (the SI's "custom DDP": no buckets, no overlap);
- ``ddp``: :class:`torch.nn.parallel.DistributedDataParallel` (bucketed all-reduces
  overlapped with backward). DDP averages gradients, so each rank's loss is multiplied
  by the world size to keep the summed objective of :mod:`atomshard.train.loss`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from atomshard.comm import Communicator
from atomshard.errors import InputError
from atomshard.models.base import Potential
from atomshard.train.batch import Batch, BatchPrediction, predict_batch


def epoch_batches(
    n: int, batch_size: int, *, seed: int, epoch: int, world_size: int = 1
) -> list[list[int]]:
    """The global batches (frame indices) of ``epoch``: a seeded shuffle, chunked.

    A last batch with fewer frames than ranks is merged into the one before, so every
    rank gets at least one frame per step.
    """
    if n < world_size:
        raise InputError(f"{n} training frames cannot feed {world_size} ranks")
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n, generator=gen).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < world_size:
        tail = batches.pop()
        batches[-1] = batches[-1] + tail
    if len(batches[0]) < world_size:
        raise InputError(f"batch_size={batch_size} is smaller than the {world_size} ranks")
    return batches


def shard(indices: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's part of a global batch or of the validation set (no duplicates)."""
    return indices[rank::world_size]


class ForceModel(nn.Module):
    """``model`` -> (energies, forces, stress) of a batch; the module DDP wraps.

    Args:
        model: the potential.
        stress: predict per-system stress (needed when the loss has a stress term).
    """

    def __init__(self, model: Potential, *, stress: bool) -> None:
        super().__init__()
        self.model = model
        self.stress = stress

    def forward(self, batch: Batch, create_graph: bool = True) -> tuple[Any, ...]:
        pred = predict_batch(
            self.model,
            batch,
            forces=True,
            stress=self.stress,
            create_graph=create_graph,
        )
        return pred.energy, pred.forces, pred.stress


def as_prediction(out: tuple[Any, ...]) -> BatchPrediction:
    """The tuple returned by :class:`ForceModel` as a :class:`BatchPrediction`."""
    return BatchPrediction(energy=out[0], forces=out[1], stress=out[2])


class GradientSync:
    """Sums gradients over ranks with the chosen strategy (identity serially).

    Args:
        strategy: ``"allreduce"`` or ``"ddp"``.
        comm: the data-parallel communicator.
        module: the :class:`ForceModel` to train.

    Attributes:
        forward_module: call this for the training forward pass (DDP-wrapped or not).
        loss_scale: multiply each rank's loss by this before ``backward``.
    """

    def __init__(self, strategy: str, comm: Communicator, module: ForceModel) -> None:
        self.strategy = strategy
        self.comm = comm
        self.module = module
        self.world_size = int(getattr(comm, "world_size", 1))
        self.distributed = bool(comm.is_distributed)
        self.forward_module: nn.Module = module
        self.loss_scale = 1.0
        if self.distributed and strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            self.forward_module = DistributedDataParallel(
                module, process_group=getattr(comm, "group", None)
            )
            self.loss_scale = float(self.world_size)
        elif self.distributed:
            self.broadcast_parameters()

    def broadcast_parameters(self) -> None:
        """Make every rank start from rank 0's weights (DDP does this itself)."""
        for p in self.module.parameters():
            self.comm.broadcast(p.data, src=0, what="broadcast parameters")

    def after_backward(self) -> None:
        """Fill missing gradients with zeros, then sum them over ranks (``allreduce``)."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if not self.distributed or self.strategy == "ddp":
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
        total = self.comm.all_reduce_sum(flat, what="gradient all-reduce")
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(total[offset : offset + n].view_as(p))  # type: ignore[union-attr]
            offset += n
