"""Full-batch training of the Hamiltonian model on one structure split over ranks.

The same steps as the serial :func:`atomshard.train.hamiltonian.train` with that one
structure as training and validation set (AdamW, the EMA of
:class:`~atomshard.train.ema.WeightAverage`, ReduceLROnPlateau on the EMA weights' MAE).
Each rank evaluates its part with :func:`atomshard.runtime.hamiltonian.predict_part`; its
loss is ``(l1 * sum|ΔH| + l2 * sum ΔH²)`` over its owned blocks divided by the global
element count, so the ranks' losses add up to the serial loss; after backward the
parameter gradients are summed over ranks with one all-reduce
(:func:`atomshard.train.parallel.sum_gradients` in float64; a gradient no rank has stays
None, as serially).

With an output folder, rank 0 writes ``last.pt`` in the trainers' one layout
(:func:`atomshard.train.resume.training_payload`) every ``checkpoint_every`` epochs and
``metrics.csv`` every epoch; a run resumes from ``last.pt`` (every rank loads what rank 0
read) and continues the same steps. SIGTERM on any rank stops every rank after the same
epoch (one full-batch step), with ``last.pt`` written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomshard.comm import Communicator, ExchangeProfiler, HaloExchange, root_scatter
from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.models.hamiltonian.config import HamiltonianConfig
from atomshard.models.hamiltonian.data import Sample
from atomshard.models.hamiltonian.heads import BlockHead
from atomshard.models.hamiltonian.model import HamiltonianModel, HamiltonianPrediction
from atomshard.runtime import PartitionSpec
from atomshard.runtime.hamiltonian import (
    HamiltonianPart,
    owned_errors,
    predict_part,
    split_hamiltonian,
)
from atomshard.train.config import cosine_lr
from atomshard.train.ema import WeightAverage
from atomshard.train.hamiltonian import FIELDS, TrainingConfig
from atomshard.train.metrics import METRICS_FILE, write_metrics
from atomshard.train.parallel import sum_gradients
from atomshard.train.resume import read_training_checkpoint, restore_training, training_payload
from atomshard.utils.signals import StopOnSigterm

__all__ = [
    "DistributedTrainResult",
    "distributed_gradients",
    "fit_distributed",
    "fit_statistics_distributed",
    "train_distributed",
    "train_rank",
]


class _RecordingExchange:
    """The halo exchange, remembering its outputs so a loss can touch every one of them.

    A rank whose loss does not depend on some exchange (no owned targets, no atoms) must
    still run that exchange's backward, because its peers wait for it there.
    """

    def __init__(self, ex: HaloExchange) -> None:
        self.ex = ex
        self.outputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ex(x)
        self.outputs.append(out)
        return out

    def anchor(self) -> torch.Tensor:
        """``0 * sum`` of every exchanged tensor: ties each exchange into the loss graph."""
        total = torch.zeros((), dtype=torch.float64)
        for out in self.outputs:
            total = total + 0.0 * out.sum().to(torch.float64)
        return total


def _sums(
    pred: HamiltonianPrediction, part: HamiltonianPart
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sums of |ΔH| and ΔH² and the element count over this rank's owned targets."""
    abs_sum = sq_sum = torch.zeros((), dtype=torch.float64)
    count = 0
    for kind in ("node", "edge"):
        got, want = getattr(pred, kind), getattr(part, kind)
        for key, (idx, target) in want.items():
            p_idx, p = got[key]
            if not torch.equal(p_idx.cpu(), idx):
                raise InputError(f"{kind} blocks {key}: prediction and targets are misaligned")
            d = p - target.to(p.device)
            abs_sum = abs_sum + d.abs().sum()
            sq_sum = sq_sum + d.pow(2).sum()
            count += d.numel()
    return abs_sum, sq_sum, count


def _reduce(comm: Communicator, values: list[float], what: str) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    return comm.all_reduce_sum(t, what=what).tolist()


def _loss_step(
    model: HamiltonianModel,
    part: HamiltonianPart,
    ex: HaloExchange,
    comm: Communicator,
    cfg: TrainingConfig,
    graph: AtomicGraph,
) -> tuple[float, float]:
    """Forward, this rank's share of the loss, backward, gradient all-reduce.

    Returns the global loss and the global training MAE (eV).
    """
    rec = _RecordingExchange(ex)
    pred = predict_part(model, part, rec, graph=graph)
    abs_sum, sq_sum, count = _sums(pred, part)
    (total,) = _reduce(comm, [float(count)], "element count")
    loss = (cfg.l1_weight * abs_sum + cfg.l2_weight * sq_sum) / max(total, 1.0)
    model.zero_grad(set_to_none=True)
    (loss + rec.anchor()).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    sum_gradients(comm, params, dtype=torch.float64)
    g_loss, g_abs = _reduce(comm, [float(loss.detach()), float(abs_sum.detach())], "loss sum")
    return g_loss, g_abs / max(total, 1.0)


def distributed_gradients(
    comm: Communicator, model: HamiltonianModel, part: HamiltonianPart, cfg: TrainingConfig
) -> float:
    """Leave the summed (global) loss gradients in ``model``'s ``.grad``; return the loss."""
    ex = HaloExchange(part.plan, comm)
    loss, _ = _loss_step(model, part, ex, comm, cfg, part.graph(comm.device))
    return loss


def fit_statistics_distributed(
    comm: Communicator, model: HamiltonianModel, part: HamiltonianPart
) -> None:
    """:func:`~atomshard.train.hamiltonian.fit_output_statistics` over ranks."""
    for kind, table in (("node", model.node_heads), ("edge", model.edge_heads)):
        for key, module in table.items():
            head = module
            assert isinstance(head, BlockHead)
            a, b = (int(v) for v in key.split("_"))
            n0 = len(head.scalar_positions())
            size = head.coupling.size
            got = getattr(part, kind).get((a, b))
            if got is not None:
                c = head.coupling.to_coupled(got[1].to(torch.float64).numpy())
                coupled = np.asarray(c).reshape(-1, size)
            else:
                coupled = np.zeros((0, size))
            first = _reduce(comm, [float(len(coupled)), *coupled[:, :n0].sum(axis=0)], "stats")
            n_blocks = first[0]
            if n_blocks == 0:
                continue
            shift = np.zeros(size)
            shift[:n0] = np.asarray(first[1:]) / n_blocks
            (sq,) = _reduce(comm, [float(((coupled - shift) ** 2).sum())], "stats")
            rms = math.sqrt(sq / (n_blocks * size))
            with torch.no_grad():
                head.shift.copy_(torch.as_tensor(shift))
                head.scale.fill_(max(rms, 1e-4))


def _mae(
    comm: Communicator,
    model: HamiltonianModel,
    part: HamiltonianPart,
    ex: HaloExchange,
    graph: AtomicGraph,
) -> dict[str, float]:
    with torch.no_grad():
        pred = predict_part(model, part, ex, graph=graph)
    return owned_errors(comm, pred, part)


@dataclass
class DistributedTrainResult:
    """Final weights (the same on every rank) and per-epoch history."""

    state_dict: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None
    history: list[dict[str, float]]
    #: stopped by SIGTERM (``last.pt`` in the output folder holds the state)
    interrupted: bool = False


def train_distributed(
    comm: Communicator,
    model: HamiltonianModel,
    part: HamiltonianPart,
    cfg: TrainingConfig,
    *,
    fit_statistics: bool = True,
    profiler: ExchangeProfiler | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    output: str | Path | None = None,
    resume: bool = True,
) -> DistributedTrainResult:
    """Full-batch training on one structure split over the ranks of ``comm``.

    The same steps as :func:`atomshard.train.hamiltonian.train` with that one
    structure as training and validation set (AdamW, EMA, ReduceLROnPlateau on the EMA
    weights' MAE), so the weights after N epochs equal the serial run's to round-off.
    ``model`` must hold the same initial weights on every rank. ``output``: the folder of
    ``last.pt`` and ``metrics.csv`` (module docstring); ``resume`` continues from its
    ``last.pt`` when there is one.
    """
    if cfg.node_weight != 1.0:
        raise InputError(
            f"training.node_weight = {cfg.node_weight} is not supported by graph-parallel "
            "training (its loss weighs all elements alike); use 1.0"
        )
    if cfg.band_epochs:
        raise InputError(
            f"training.band_epochs = {cfg.band_epochs}: the band-energy stage needs the "
            "whole H(k) of a structure on one rank; run it with the serial trainer"
        )
    if fit_statistics and (model.node_baselines or model.edge_baselines):
        raise InputError(
            "node_baseline / edge_baseline are fitted by the serial trainer only: fit them "
            "(atomshard.train.hamiltonian.fit_output_statistics) on the structure and call "
            "train_distributed(..., fit_statistics=False), or set them to 0"
        )
    if fit_statistics:
        fit_statistics_distributed(comm, model, part)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
    )
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    ex = HaloExchange(part.plan, comm, profiler=profiler)
    graph = part.graph(comm.device)
    history: list[dict[str, float]] = []
    out = None if output is None else Path(output)
    last = None if out is None else out / "last.pt"
    start = 0
    if last is not None and resume:
        found = comm.broadcast_object(last.exists() if comm.rank == 0 else None)
        if found:
            training = comm.broadcast_object(
                read_training_checkpoint(last, model.config)["training"] if comm.rank == 0 else None
            )
            state = restore_training(training, model=model, ema=ema, optimizer=opt, scheduler=sched)
            start, history = int(state["epoch"]), list(state["history"])

    def save_last(epochs_done: int) -> None:
        if last is None or comm.rank != 0:
            return
        from atomshard.models.checkpoint import save_checkpoint

        payload = training_payload(
            model=model, ema=ema, optimizer=opt, scheduler=sched,
            state={"epoch": epochs_done, "history": history},
        )  # fmt: skip
        save_checkpoint(
            last, model, model_type="hamiltonian", config=model.config,
            extra={"training": payload},
        )  # fmt: skip

    interrupted = False
    with StopOnSigterm() as stop:
        for epoch in range(start, cfg.epochs):
            if _any_rank(comm, stop.received):  # one full-batch step per epoch
                save_last(epoch)
                if comm.rank == 0:
                    print(f"SIGTERM: stopped before epoch {epoch + 1}; wrote {last}")
                interrupted = True
                break
            history.append(_epoch(comm, model, part, ex, graph, cfg, opt, sched, ema, epoch))
            if out is not None and comm.rank == 0:
                write_metrics(out / METRICS_FILE, history, FIELDS)
            if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                save_last(epoch + 1)
            if progress is not None and comm.rank == 0:
                progress(epoch + 1, history[-1])
    state_dict: dict[str, Any] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return DistributedTrainResult(
        state_dict=state_dict,
        ema_state=None if ema is None else {k: v.clone() for k, v in ema.shadow.items()},
        history=history,
        interrupted=interrupted,
    )


def _any_rank(comm: Communicator, flag: bool) -> bool:
    if comm.world_size == 1:
        return flag
    mine = torch.tensor([float(flag)], dtype=torch.float64)
    return bool(comm.all_reduce_max(mine, what="SIGTERM check")[0] > 0)


def _epoch(
    comm: Communicator,
    model: HamiltonianModel,
    part: HamiltonianPart,
    ex: HaloExchange,
    graph: AtomicGraph,
    cfg: TrainingConfig,
    opt: torch.optim.Optimizer,
    sched: Any,
    ema: WeightAverage | None,
    epoch: int,
) -> dict[str, float]:
    """One full-batch step, the EMA weights' validation and the scheduler; the row."""
    t0 = time.perf_counter()
    if cfg.lr_schedule == "cosine":
        for group in opt.param_groups:
            group["lr"] = cosine_lr(cfg.lr, cfg.min_lr, epoch, cfg.epochs)
    model.train()
    loss, mae = _loss_step(model, part, ex, comm, cfg, graph)
    opt.step()
    if ema is not None:
        ema.update(model)
    model.eval()
    if ema is not None:
        ema.swap(model)
    val = _mae(comm, model, part, ex, graph)
    if ema is not None:
        ema.swap(model)
    if cfg.lr_schedule == "plateau":
        sched.step(val["mae"])
    return {
        "epoch": epoch + 1,
        "lr": opt.param_groups[0]["lr"],
        "train_loss": loss,
        "train_mae": mae,
        "val_mae": val["mae"],
        "val_mae_node": val["mae_node"],
        "val_mae_edge": val["mae_edge"],
        "seconds": time.perf_counter() - t0,
    }


def _split_sample(
    sample: Sample | None, config: HamiltonianConfig, n_ranks: int, partition: PartitionSpec
) -> list[HamiltonianPart]:
    """Rank 0: every rank's part of the training structure and its targets."""
    if sample is None:
        raise InputError("rank 0 must hold the training structure")
    st = sample.graph.structure()
    return split_hamiltonian(st, config.cutoff, n_ranks, partition, sample=sample)


def train_rank(
    comm: Communicator,
    config: HamiltonianConfig,
    cfg: TrainingConfig,
    partition: PartitionSpec = "lownn",
    *,
    sample: Sample | None,
    output: str | Path | None = None,
    resume: bool = True,
) -> DistributedTrainResult | None:
    """One rank of :func:`fit_distributed` (rank 0 holds ``sample``); result on rank 0."""
    torch.manual_seed(cfg.seed)  # the serial trainer's initial weights, on every rank
    model = HamiltonianModel(config).to(comm.device)
    part = root_scatter(comm, _split_sample, sample, config, comm.world_size, partition)
    res = train_distributed(comm, model, part, cfg, output=output, resume=resume)
    return res if comm.rank == 0 else None


def fit_distributed(
    config: HamiltonianConfig,
    sample: Sample,
    cfg: TrainingConfig,
    *,
    n_ranks: int,
    partition: PartitionSpec = "lownn",
    output: str | Path | None = None,
    timeout_s: float = 600.0,
    resume: bool = True,
) -> DistributedTrainResult:
    """Full-batch training on one structure over ``n_ranks`` local ranks.

    With ``output``: ``last.pt`` every ``cfg.checkpoint_every`` epochs and ``metrics.csv``
    every epoch while it runs (``resume`` continues from ``last.pt``), then ``model.pt``
    (the EMA weights, like the serial ``best.pt``, or the final weights without EMA; loads
    with ``load_model``) and ``learning_curve.png``. SIGTERM to this process reaches the
    ranks, which stop after the same epoch with ``last.pt`` written (the result says
    ``interrupted``; no ``model.pt`` then).
    """
    from atomshard.comm import NullCommunicator, launch
    from atomshard.utils.signals import forward_to_children

    if n_ranks < 1:
        raise InputError(f"n_ranks must be at least 1, got {n_ranks}")
    if output is not None:
        Path(output).mkdir(parents=True, exist_ok=True)
    if n_ranks == 1:
        res = train_rank(
            NullCommunicator(), config, cfg, partition, sample=sample, output=output,
            resume=resume,
        )  # fmt: skip
    else:
        with StopOnSigterm(forward=forward_to_children):
            res = launch(
                train_rank, n_ranks, config, cfg, partition, timeout_s=timeout_s,
                root_only={"sample": sample}, output=output, resume=resume,
            )[0]  # fmt: skip
    assert isinstance(res, DistributedTrainResult)
    if output is not None and not res.interrupted:
        from atomshard.models.checkpoint import save_checkpoint
        from atomshard.train.metrics import HAMILTONIAN_PANELS, plot_learning_curves

        out = Path(output)
        model = HamiltonianModel(config)
        model.load_state_dict(res.ema_state if res.ema_state is not None else res.state_dict)
        save_checkpoint(
            out / "model.pt", model, model_type="hamiltonian", config=config,
            metadata={"epochs": len(res.history), "ranks": n_ranks,
                      **({} if not res.history else {"val_mae": res.history[-1]["val_mae"]})},
        )  # fmt: skip
        if res.history:
            plot_learning_curves(res.history, out / "learning_curve.png", HAMILTONIAN_PANELS)
    return res
