"""Graph-parallel prediction and training of the SO(2) Hamiltonian model.

Ownership (incoming edges, as for potentials): rank ``r`` owns its atoms' node blocks
``H_ii`` and the blocks of its incoming edges ``src -> dst`` (``dst`` owned), i.e. every
block of the block rows of its atoms. Node embeddings of remote sources arrive through
the halo exchange once per layer (:class:`~atomshard.comm.HaloExchange`, whose backward
sends activation gradients home).

**Reverse edges.** The model symmetrises every edge block with its reverse edge,
``B_k = (raw_k + raw_rev(k)^T) / 2``. For a boundary edge ``k = a -> b`` (``a`` remote)
the reverse edge ``b -> a`` is owned by ``a``'s owner. Rather than exchanging its raw
block (or final edge embedding), each rank appends the reverse of each of its boundary
edges to its local graph and computes it redundantly: an edge update reads only its own
embedding and the layer's (exchanged) node embeddings of its two endpoints, and both
endpoints are local rows here, so the redundant edge embedding is the one its owner
computes, at no extra communication. The appended edges' messages land on halo rows,
whose node updates are discarded (the next exchange overwrites them and its backward
drops their gradients), and their blocks are not reported.

Training: each rank's loss is ``(l1 * sum|ΔH| + l2 * sum ΔH²)`` over its owned blocks
divided by the global element count, so the ranks' losses add up to the serial loss;
after backward the parameter gradients are summed over ranks with one all-reduce.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomshard.comm import Communicator, ExchangeProfiler, HaloExchange
from atomshard.errors import InputError
from atomshard.graph import AtomicGraph, Structure, neighbor_list
from atomshard.models.hamiltonian.config import HamiltonianConfig
from atomshard.models.hamiltonian.data import Sample
from atomshard.models.hamiltonian.heads import BlockHead
from atomshard.models.hamiltonian.model import HamiltonianModel, HamiltonianPrediction
from atomshard.models.hamiltonian.training import EMA, TrainingConfig
from atomshard.partition import HaloPlan, build_halo_plans
from atomshard.runtime._evaluate import local_graph, local_rows
from atomshard.runtime._partition import PartitionSpec, partition_atoms

__all__ = [
    "DistributedTrainResult",
    "HamiltonianPart",
    "distributed_gradients",
    "fit_distributed",
    "owned_blocks",
    "owned_errors",
    "predict_part",
    "split_hamiltonian",
    "train_distributed",
    "train_rank",
]

Pair = tuple[int, int]
Grouped = dict[Pair, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True, eq=False)
class HamiltonianPart:
    """One rank's share of a structure: halo plan, local rows and owned targets.

    Shapes:
        positions: ``[n_local, 3]`` float64 Å (owned rows, then halo rows)
        species: ``[n_local]`` int64; cell ``[3, 3]``; pbc ``[3]``
        node, edge: targets of owned blocks grouped like the model's output, local
            indices ascending (empty without reference blocks)
    """

    plan: HaloPlan
    positions: np.ndarray
    species: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    n_atoms: int
    cutoff: float
    node: Grouped = field(default_factory=dict)
    edge: Grouped = field(default_factory=dict)

    @property
    def n_owned_edges(self) -> int:
        return self.plan.n_local_edges

    def graph(self, device: torch.device | str = "cpu") -> AtomicGraph:
        """Local graph: owned edges, then the reverse of every boundary edge (see module)."""
        p = self.plan
        boundary = np.flatnonzero(p.src >= p.n_owned)
        src = np.concatenate([p.src, p.dst[boundary]])
        dst = np.concatenate([p.dst, p.src[boundary]])
        shifts = np.concatenate([p.shifts.reshape(-1, 3), -p.shifts[boundary].reshape(-1, 3)])

        return local_graph(self, src, dst, shifts, device)

    def owned_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Global ``(Rx, Ry, Rz, i, j)`` of owned node rows and owned edges (local order)."""
        p = self.plan
        g = p.local_to_global
        owned = g[: p.n_owned]
        node = np.column_stack([np.zeros((len(owned), 3), np.int64), owned, owned])
        edge = np.column_stack([p.shifts.reshape(-1, 3), g[p.dst], g[p.src]])
        return node.reshape(-1, 5), edge.reshape(-1, 5)


def _local_targets(grouped: Grouped, owner: np.ndarray, local_of: np.ndarray, rank: int) -> Grouped:
    """The entries of ``grouped`` (global indices) that ``rank`` owns, in local indices."""
    out: Grouped = {}
    for key, (idx, blocks) in grouped.items():
        gi = idx.numpy()
        mine = np.flatnonzero(owner[gi] == rank)
        if len(mine):
            out[key] = (torch.as_tensor(local_of[gi[mine]]), blocks[torch.as_tensor(mine)])
    return out


def split_hamiltonian(
    structure: Structure,
    cutoff: float,
    n_parts: int,
    partition: PartitionSpec = "lownn",
    *,
    edges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    sample: Sample | None = None,
) -> list[HamiltonianPart]:
    """Partition ``structure`` and build every rank's part (rank 0 calls this).

    Args:
        edges: ``(src, dst, shifts)`` of the global graph (default: the neighbour list at
            ``cutoff``); with ``sample``, the sample's graph edges are used.
        sample: training sample whose targets are split with the blocks they belong to.
    """
    if sample is not None:
        g = sample.graph
        edges = (g.src.numpy(), g.dst.numpy(), g.shifts.numpy())
    if edges is None:
        edges = neighbor_list(structure.positions, structure.cell, structure.pbc, cutoff=cutoff)
    src, dst, shifts = (np.asarray(a, dtype=np.int64) for a in edges)
    n = structure.n_atoms
    part = partition_atoms(partition, structure, src, dst, shifts, n_parts, cutoff=cutoff)
    plans = build_halo_plans(src, dst, shifts, n, part, n_parts)
    parts = []
    for p in plans:
        node: Grouped = {}
        edge: Grouped = {}
        if sample is not None:
            owned_local = np.empty(n, np.int64)
            owned_local[p.owned_global] = np.arange(p.n_owned)
            node = _local_targets(sample.node, part, owned_local, p.rank)
            edge_local = np.full(len(src), -1, np.int64)
            edge_local[p.edge_global] = np.arange(len(p.edge_global))
            edge = _local_targets(sample.edge, part[dst], edge_local, p.rank)
        parts.append(HamiltonianPart(**local_rows(structure, p, cutoff), node=node, edge=edge))
    return parts


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


def _owned(pred: HamiltonianPrediction, n_owned: int, n_owned_edges: int) -> HamiltonianPrediction:
    """Drop the blocks of halo rows and of the appended reverse edges."""

    def keep(table: Grouped, limit: int) -> Grouped:
        out: Grouped = {}
        for key, (idx, blocks) in table.items():
            mask = idx < limit
            if bool(mask.any()):
                out[key] = (idx[mask], blocks[mask])
        return out

    return HamiltonianPrediction(node=keep(pred.node, n_owned), edge=keep(pred.edge, n_owned_edges))


def predict_part(
    model: HamiltonianModel,
    part: HamiltonianPart,
    exchange: Callable[[torch.Tensor], torch.Tensor],
    *,
    graph: AtomicGraph | None = None,
) -> HamiltonianPrediction:
    """This rank's owned blocks (local indices); every rank must call it together."""
    graph = graph if graph is not None else part.graph()
    pred = model(graph, exchange)
    return _owned(pred, part.plan.n_owned, part.n_owned_edges)


def owned_blocks(
    pred: HamiltonianPrediction, part: HamiltonianPart
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(pairs, blocks)`` of :func:`predict_part`'s output in global indices: ``pairs``
    ``[n, 5]`` int64 ``(Rx, Ry, Rz, i, j)``, ``blocks`` ``n`` float arrays (eV), in the
    order of the prediction's tables (as :func:`~atomshard.hamiltonian.parts.write_part`
    takes them)."""
    node_pairs, edge_pairs = part.owned_pairs()
    pairs: list[np.ndarray] = []
    blocks: list[np.ndarray] = []
    for table, gpairs in ((pred.node, node_pairs), (pred.edge, edge_pairs)):
        for idx, b in table.values():
            pairs.append(gpairs[idx.cpu().numpy()])
            blocks += list(b.detach().cpu().numpy())
    allp = np.concatenate(pairs) if pairs else np.zeros((0, 5), np.int64)
    return allp, blocks


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


def _all_reduce_grads(comm: Communicator, model: torch.nn.Module) -> None:
    """Sum gradients over ranks in one all-reduce; a gradient no rank has stays None."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64)
        for p in params
    ]
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float64)
    buf = torch.cat([*flat, has]) if params else has
    buf = comm.all_reduce_sum(buf, what="gradient all-reduce")
    offset = 0
    for k, p in enumerate(params):
        n = p.numel()
        if float(buf[len(buf) - len(params) + k]) > 0:
            p.grad = buf[offset : offset + n].reshape(p.shape).to(p.dtype).clone()
        else:
            p.grad = None
        offset += n


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
    _all_reduce_grads(comm, model)
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
    """:func:`~atomshard.models.hamiltonian.training.fit_output_statistics` over ranks."""
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


def owned_errors(
    comm: Communicator, pred: HamiltonianPrediction, part: HamiltonianPart
) -> dict[str, float]:
    """Mean absolute errors (eV) of node, edge and all blocks over every rank's owned
    blocks (one all-reduce), and the number of matrix elements compared."""
    sums: list[float] = []
    for kind in ("node", "edge"):
        s, n = 0.0, 0
        got = getattr(pred, kind)
        for key, (_, target) in getattr(part, kind).items():
            d = (got[key][1].detach().cpu() - target).abs()
            s += float(d.sum())
            n += d.numel()
        sums += [s, float(n)]
    sn, nn, se, ne = _reduce(comm, sums, "block errors")
    return {
        "mae": (sn + se) / max(nn + ne, 1.0),
        "mae_node": sn / max(nn, 1.0),
        "mae_edge": se / max(ne, 1.0),
        "n_elements": nn + ne,
    }


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


def train_distributed(
    comm: Communicator,
    model: HamiltonianModel,
    part: HamiltonianPart,
    cfg: TrainingConfig,
    *,
    fit_statistics: bool = True,
    profiler: ExchangeProfiler | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> DistributedTrainResult:
    """Full-batch training on one structure split over the ranks of ``comm``.

    The same steps as :func:`atomshard.models.hamiltonian.training.train` with that one
    structure as training and validation set (AdamW, EMA, ReduceLROnPlateau on the EMA
    weights' MAE), so the weights after N epochs equal the serial run's to round-off.
    ``model`` must hold the same initial weights on every rank.
    """
    if fit_statistics:
        fit_statistics_distributed(comm, model, part)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
    )
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    ex = HaloExchange(part.plan, comm, profiler=profiler)
    graph = part.graph(comm.device)
    history = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
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
        sched.step(val["mae"])
        row = {
            "epoch": epoch + 1,
            "lr": opt.param_groups[0]["lr"],
            "train_loss": loss,
            "train_mae": mae,
            "val_mae": val["mae"],
            "val_mae_node": val["mae_node"],
            "val_mae_edge": val["mae_edge"],
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        if progress is not None and comm.rank == 0:
            progress(epoch + 1, row)
    state: dict[str, Any] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return DistributedTrainResult(
        state_dict=state,
        ema_state=None if ema is None else {k: v.clone() for k, v in ema.shadow.items()},
        history=history,
    )


def train_rank(
    comm: Communicator,
    config: HamiltonianConfig,
    cfg: TrainingConfig,
    partition: PartitionSpec = "lownn",
    *,
    sample: Sample | None,
) -> DistributedTrainResult | None:
    """One rank of :func:`fit_distributed` (rank 0 holds ``sample``); result on rank 0."""
    torch.manual_seed(cfg.seed)  # the serial trainer's initial weights, on every rank
    model = HamiltonianModel(config).to(comm.device)
    parts: list[Any] | None = None
    if comm.rank == 0:
        try:
            if sample is None:
                raise InputError("rank 0 must hold the training structure")
            st = sample.graph.structure()
            parts = split_hamiltonian(st, config.cutoff, comm.world_size, partition, sample=sample)
        except Exception as exc:
            parts = [exc] * comm.world_size
    part = comm.scatter_objects(parts) if comm.world_size > 1 else parts[0]  # type: ignore[index]
    if isinstance(part, Exception):
        raise part
    res = train_distributed(comm, model, part, cfg)
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
) -> DistributedTrainResult:
    """Full-batch training on one structure over ``n_ranks`` local ranks.

    With ``output``, writes ``model.pt`` (the EMA weights, like the serial ``best.pt``, or
    the final weights without EMA; loads with ``load_model``) and ``log.csv``.
    """
    from atomshard.comm import NullCommunicator, launch

    if n_ranks < 1:
        raise InputError(f"n_ranks must be at least 1, got {n_ranks}")
    if n_ranks == 1:
        res = train_rank(NullCommunicator(), config, cfg, partition, sample=sample)
    else:
        res = launch(
            train_rank, n_ranks, config, cfg, partition, timeout_s=timeout_s,
            root_only={"sample": sample},
        )[0]  # fmt: skip
    assert isinstance(res, DistributedTrainResult)
    if output is not None:
        import csv

        from atomshard.models.checkpoint import save_checkpoint
        from atomshard.utils.files import atomic_write

        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        model = HamiltonianModel(config)
        model.load_state_dict(res.ema_state if res.ema_state is not None else res.state_dict)
        save_checkpoint(
            out / "model.pt", model, model_type="hamiltonian", config=config,
            metadata={"epochs": len(res.history), "ranks": n_ranks,
                      **({} if not res.history else {"val_mae": res.history[-1]["val_mae"]})},
        )  # fmt: skip
        with atomic_write(str(out / "log.csv")) as handle:
            if res.history:
                w = csv.DictWriter(handle, fieldnames=list(res.history[0]))
                w.writeheader()
                w.writerows(res.history)
    return res
