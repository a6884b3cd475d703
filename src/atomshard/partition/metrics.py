"""Partition quality (per part and in total) and a communication cost model.

All counts follow incoming-edge ownership (see :mod:`atomshard.partition.plan`): a part
owns its atoms and the edges into them; its halo rows are the distinct remote sources of
those edges; the rows it sends are the halo rows other parts receive from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from atomshard.errors import InputError
from atomshard.partition._pairs import unique_pairs


@dataclass(frozen=True, kw_only=True)
class CommCostModel:
    """Estimated time of one halo exchange plus the message work of the slowest part.

    ``time(part) = latency_s * n_neighbours + max(rows_sent, halo_rows) * row_bytes /
    bandwidth_Bps + edge_time_s * owned_edges``; a partition costs its slowest part.
    A row is one atom's embedding, ``(l_max + 1)^2 * embedding * dtype_bytes`` bytes.
    Defaults follow the Hamiltonian seed's setting (E = 16, l_max = 4, float32: 1,600 B)
    with assumed 20 µs per posted send/receive pair, 10 GB/s per link and 10 ns per
    message; they rank partitions, they do not predict wall time.
    """

    latency_s: float = 20e-6
    bandwidth_Bps: float = 10e9
    embedding: int = 16
    l_max: int = 4
    dtype_bytes: int = 4
    edge_time_s: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("latency_s", "edge_time_s"):
            if not getattr(self, name) >= 0:
                raise InputError(f"CommCostModel.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("bandwidth_Bps", "embedding", "dtype_bytes"):
            if not getattr(self, name) > 0:
                raise InputError(f"CommCostModel.{name} must be > 0, got {getattr(self, name)}")
        if self.l_max < 0:
            raise InputError(f"CommCostModel.l_max must be >= 0, got {self.l_max}")

    @property
    def row_bytes(self) -> int:
        return (self.l_max + 1) ** 2 * self.embedding * self.dtype_bytes

    @property
    def row_time_s(self) -> float:
        return self.row_bytes / self.bandwidth_Bps

    def part_times(
        self,
        n_neighbours: np.ndarray,
        halo_rows: np.ndarray,
        rows_sent: np.ndarray,
        owned_edges: np.ndarray,
    ) -> np.ndarray:
        """``[n_parts]`` estimated seconds per part (exchange + message work)."""
        rows = np.maximum(halo_rows, rows_sent)
        return (
            self.latency_s * n_neighbours + self.row_time_s * rows + self.edge_time_s * owned_edges
        )


@dataclass(frozen=True, kw_only=True)
class PartitionMetrics:
    """Quality of one partition.

    Shapes:
        owned_nodes, owned_edges, n_neighbours, halo_rows, rows_sent, components:
        ``[n_parts]`` int64 (``components``: connected pieces of the part's own subgraph;
        1 for a contiguous part, 0 for an empty one).
    """

    method: str
    n_parts: int
    owned_nodes: np.ndarray
    owned_edges: np.ndarray
    n_neighbours: np.ndarray
    halo_rows: np.ndarray
    rows_sent: np.ndarray
    components: np.ndarray
    partition_time_s: float = float("nan")
    cost_model: CommCostModel = field(default_factory=CommCostModel)

    @staticmethod
    def _imbalance(x: np.ndarray) -> float:
        mean = float(x.mean()) if len(x) else 0.0
        return float(x.max()) / mean if mean > 0 else 1.0

    @property
    def node_imbalance(self) -> float:
        """max / mean owned atoms (mean over all parts, empty ones included)."""
        return self._imbalance(self.owned_nodes)

    @property
    def edge_imbalance(self) -> float:
        """max / mean owned edges."""
        return self._imbalance(self.owned_edges)

    @property
    def n_empty(self) -> int:
        return int((self.owned_nodes == 0).sum())

    @property
    def n_disconnected(self) -> int:
        """Parts made of more than one connected piece."""
        return int((self.components > 1).sum())

    @property
    def part_times_s(self) -> np.ndarray:
        return self.cost_model.part_times(
            self.n_neighbours, self.halo_rows, self.rows_sent, self.owned_edges
        )

    @property
    def estimated_time_s(self) -> float:
        """Cost-model time of the slowest part, s (see :class:`CommCostModel`)."""
        return float(self.part_times_s.max())

    def summary(self) -> dict[str, Any]:
        """Totals and max/mean figures, JSON-ready."""

        def mm(x: np.ndarray) -> dict[str, float]:
            return {"max": int(x.max()), "mean": float(x.mean()), "total": int(x.sum())}

        return {
            "method": self.method,
            "n_parts": self.n_parts,
            "partition_time_s": self.partition_time_s,
            "owned_nodes": mm(self.owned_nodes),
            "owned_edges": mm(self.owned_edges),
            "n_neighbours": mm(self.n_neighbours),
            "halo_rows": mm(self.halo_rows),
            "rows_sent": mm(self.rows_sent),
            "node_imbalance": self.node_imbalance,
            "edge_imbalance": self.edge_imbalance,
            "empty_parts": self.n_empty,
            "disconnected_parts": self.n_disconnected,
            "max_components": int(self.components.max()),
            "estimated_time_s": self.estimated_time_s,
        }

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary` plus per-part lists under ``"parts"`` (see docs/partition.md)."""
        out = self.summary()
        out["parts"] = {
            name: getattr(self, name).tolist()
            for name in (
                "owned_nodes",
                "owned_edges",
                "n_neighbours",
                "halo_rows",
                "rows_sent",
                "components",
            )
        }
        out["parts"]["estimated_time_s"] = self.part_times_s.tolist()
        return out


def exchange_pairs(
    part: np.ndarray, src: np.ndarray, dst: np.ndarray, n_parts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct halo entries ``(receiver, owner, atom)``, sorted by receiver then atom.

    Shapes:
        returns: three ``[n_entries]`` int64 arrays.
    """
    n_atoms = len(part)
    receiver = part[dst]
    remote = part[src] != receiver
    key = unique_pairs(receiver[remote], src[remote], n_parts, n_atoms)
    recv, atom = np.divmod(key, n_atoms)
    return recv, part[atom], atom


def partition_metrics(
    part: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    n_parts: int,
    *,
    method: str = "",
    partition_time_s: float = float("nan"),
    cost_model: CommCostModel | None = None,
) -> PartitionMetrics:
    """Metrics of a partition vector (vectorised; one ``np.unique`` over remote edges).

    Args:
        part: ``[n_atoms]`` int64 owning part of each atom.
        src, dst: ``[n_edges]`` int64 edges ``src -> dst``.
        n_parts: number of parts (empty ones count in means).
    """
    part = np.asarray(part, dtype=np.int64)
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    n_atoms = len(part)
    if n_atoms and (part.min() < 0 or part.max() >= n_parts):
        raise InputError(f"part values must lie in [0, {n_parts})")
    owned_nodes = np.bincount(part, minlength=n_parts)
    owned_edges = np.bincount(part[dst], minlength=n_parts)
    recv, owner, _ = exchange_pairs(part, src, dst, n_parts)
    halo_rows = np.bincount(recv, minlength=n_parts)
    rows_sent = np.bincount(owner, minlength=n_parts)
    # Neighbours: parts exchanged with in either direction.
    links = unique_pairs(
        np.concatenate([recv, owner]), np.concatenate([owner, recv]), n_parts, n_parts
    )
    n_neighbours = np.bincount(links // n_parts, minlength=n_parts)
    # Connected pieces of each part's own subgraph (edges with both ends in the part).
    inside = part[src] == part[dst]
    graph = coo_matrix(
        (np.ones(int(inside.sum()), np.int8), (src[inside], dst[inside])),
        shape=(n_atoms, n_atoms),
    )
    _, label = connected_components(graph, directed=True, connection="weak")
    first = np.unique(label, return_index=True)[1]
    components = np.bincount(part[first], minlength=n_parts)
    return PartitionMetrics(
        method=method,
        n_parts=int(n_parts),
        owned_nodes=owned_nodes.astype(np.int64),
        owned_edges=owned_edges.astype(np.int64),
        n_neighbours=n_neighbours.astype(np.int64),
        halo_rows=halo_rows.astype(np.int64),
        rows_sent=rows_sent.astype(np.int64),
        components=components.astype(np.int64),
        partition_time_s=float(partition_time_s),
        cost_model=cost_model or CommCostModel(),
    )
