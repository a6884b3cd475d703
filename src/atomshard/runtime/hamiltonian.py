"""Graph-parallel evaluation of the SO(2) Hamiltonian model.

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

Rank 0 splits a structure (:func:`split_hamiltonian`), every rank predicts its owned
blocks together (:func:`predict_part`). Users: ``atomshard predict --ranks N``
(:mod:`atomshard.commands.predict_parallel`, part files merged by
:mod:`atomshard.hamiltonian.parts`) and full-batch training
(:mod:`atomshard.train.hamiltonian_distributed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from atomshard.comm import Communicator
from atomshard.graph import AtomicGraph, Structure, neighbor_list
from atomshard.models.hamiltonian.committee import HamiltonianCommittee
from atomshard.models.hamiltonian.data import Grouped, Sample
from atomshard.models.hamiltonian.model import HamiltonianModel, HamiltonianPrediction
from atomshard.partition import build_halo_plans
from atomshard.runtime._evaluate import LocalRows
from atomshard.runtime._partition import PartitionSpec, partition_atoms

__all__ = [
    "HamiltonianPart",
    "owned_blocks",
    "owned_errors",
    "predict_part",
    "split_hamiltonian",
]


@dataclass(frozen=True, eq=False)
class HamiltonianPart(LocalRows):
    """One rank's share of a structure: halo plan, local rows and owned targets.

    Shapes:
        node, edge: targets of owned blocks grouped like the model's output, local
            indices ascending (empty without reference blocks)
    """

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

        return self.local_graph(src, dst, shifts, device)

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
        parts.append(HamiltonianPart.of(structure, p, cutoff, node=node, edge=edge))
    return parts


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
    model: HamiltonianModel | HamiltonianCommittee,
    part: HamiltonianPart,
    exchange: Callable[[torch.Tensor], torch.Tensor],
    *,
    graph: AtomicGraph | None = None,
) -> HamiltonianPrediction:
    """This rank's owned blocks (local indices); every rank must call it together (a
    committee runs its members one after another, each with its own halo exchanges)."""
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


def _reduce(comm: Communicator, values: list[float], what: str) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    return comm.all_reduce_sum(t, what=what).tolist()


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
