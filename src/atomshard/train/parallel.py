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
from atomshard.train.batch import Batch, BatchPrediction, collate, predict_batch
from atomshard.train.data import LabelledStructure
from atomshard.train.loss import Counts, LossWeights, batch_loss


def epoch_batches(
    n: int, batch_size: int, *, seed: int, epoch: int, world_size: int = 1
) -> list[list[int]]:
    """The global batches (frame indices) of ``epoch``: a seeded shuffle, chunked.

    The batches do not depend on ``world_size`` (a rank whose shard of a small last
    batch is empty takes part with a zero-weighted frame, see the trainer), so training
    on any number of ranks follows the same trajectory. ``world_size`` is accepted for
    symmetry with :func:`shard` and must be positive.
    """
    if n < 1:
        raise InputError("the training set is empty")
    if world_size < 1:
        raise InputError(f"world_size must be positive, got {world_size}")
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n, generator=gen).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def shard(items: list[Any], rank: int, world_size: int) -> list[Any]:
    """This rank's part of a global batch or of the validation set (no duplicates)."""
    return items[rank::world_size]


class ForceModel(nn.Module):
    """``model`` -> (energies, forces, stress) of a batch; the module DDP wraps.

    Args:
        model: the potential.
        stress: predict per-system stress (needed when the loss has a stress term).
        compute_dtype: run the float32 body in this dtype (``torch.bfloat16``): every
            float32 parameter and buffer is cast (differentiably) for the forward pass,
            so gradients reach the float32 master weights, which the optimiser updates.
            This is what ``torch.autocast`` would do, but autocast cannot be used: e3nn's
            compiled linears then mix bf16 activations with float32 weights and fail.
            float64 tensors (geometry, energy shifts and scales) are left alone.
    """

    def __init__(
        self, model: Potential, *, stress: bool, compute_dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.stress = stress
        self.compute_dtype = compute_dtype
        self._casting = False

    def forward(self, batch: Batch, create_graph: bool = True) -> tuple[Any, ...]:
        if self.compute_dtype is not None and not self._casting:
            low = self.compute_dtype
            named = [*self.model.named_parameters(), *self.model.named_buffers()]
            cast = {f"model.{k}": t.to(low) for k, t in named if t.dtype == torch.float32}
            self._casting = True
            try:
                out = torch.func.functional_call(self, cast, (batch, create_graph), strict=False)
            finally:
                self._casting = False
            return tuple(out)
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
        sum_gradients(self.comm, params)


def sum_gradients(
    comm: Communicator, params: list[nn.Parameter], *, dtype: torch.dtype | None = None
) -> None:
    """Sum the gradients of ``params`` over the ranks of ``comm`` in one all-reduce.

    The gradients are packed into one flat buffer (with one presence flag per parameter),
    summed and unpacked. A gradient that no rank has stays None (an optimiser then skips
    that parameter, as serially); one that only some ranks have counts as zeros on the
    others.

    Args:
        dtype: dtype of the buffer (``torch.float64`` sums float32 gradients without
            rounding between ranks); default: the gradients' common dtype.
    """
    grads = [p.grad.reshape(-1) if p.grad is not None else None for p in params]
    flat = [g if g is not None else torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
            for g, p in zip(grads, params, strict=True)]  # fmt: skip
    if dtype is not None:
        flat = [g.to(dtype) for g in flat]
    values = torch.cat(flat) if flat else torch.zeros(0, dtype=dtype or torch.float64)
    has = torch.tensor([g is not None for g in grads], dtype=values.dtype, device=values.device)
    total = comm.all_reduce_sum(torch.cat([values, has]), what="gradient all-reduce")
    present = total[len(values) :] > 0
    offset = 0
    for k, p in enumerate(params):
        n = p.numel()
        if not bool(present[k]):
            p.grad = None
        elif p.grad is not None:
            p.grad.copy_(total[offset : offset + n].view_as(p))
        else:
            p.grad = total[offset : offset + n].reshape(p.shape).to(p.dtype).clone()
        offset += n


def backward_to_parameters(loss: torch.Tensor, module: nn.Module) -> None:
    """``loss.backward()`` into the trainable parameters of ``module`` only.

    The positions (and strains) the forces were taken for are leaves that require grad
    too; a plain ``backward`` would carry the loss's gradient down to them as well: the
    spherical harmonics' and edge vectors' second derivatives and, in every convolution's
    double backward, the gradient for its spherical harmonics, none of which training
    uses.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    torch.autograd.backward(loss, inputs=params)


def shard_loss(
    forward_module: nn.Module,
    global_batch: list[LabelledStructure],
    rank: int,
    world_size: int,
    weights: LossWeights,
) -> torch.Tensor:
    """This rank's share of the loss of ``global_batch`` (frames carrying edges).

    A rank whose shard is empty (a last batch smaller than the world) still runs
    forward and backward — DDP needs every rank in every all-reduce — on one frame
    whose loss is multiplied by zero, so it contributes exact zeros.
    """
    mine = shard(global_batch, rank, world_size)
    batch = collate(mine or global_batch[:1])
    pred = as_prediction(forward_module(batch, True))
    loss = batch_loss(pred, batch, Counts.of(global_batch), weights)
    return loss if mine else 0.0 * loss
