"""Figures of partitions: parts in space, the communication topology, per-method bars.

Uses matplotlib's object API (``Figure``), never pyplot, so no GUI backend is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from atomshard.partition.metrics import PartitionMetrics, exchange_pairs


def _colours(n_parts: int) -> np.ndarray:
    """``[n_parts, 4]`` RGBA: well-separated hues, shuffled so neighbours differ."""
    from matplotlib import colormaps

    order = np.random.default_rng(0).permutation(n_parts)
    return colormaps["turbo"](order / max(n_parts - 1, 1))


def _save(fig, path: str | Path) -> Path:
    from atomshard.utils.files import atomic_write

    path = Path(path)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    return path


def plot_parts(
    positions: np.ndarray, part: np.ndarray, n_parts: int, path: str | Path, *, title: str = ""
) -> Path:
    """3-D scatter of all atoms, and three slices (xy, xz, yz) coloured by part.

    Each 2-D panel shows the atoms in a slab through the middle of the third axis (10 % of
    its extent, at least 2 Å), so parts stacked along that axis do not hide each other.

    Shapes:
        positions: ``[n_atoms, 3]`` float64, Å; part: ``[n_atoms]`` int64
    """
    from matplotlib.figure import Figure

    colours = _colours(n_parts)[part]
    size = float(np.clip(3000 / max(len(part), 1), 0.3, 20))
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    ax3 = fig.add_subplot(1, 4, 1, projection="3d")
    ax3.scatter(*positions.T, c=colours, s=size, linewidths=0)
    ax3.set_xlabel("x (Å)")
    ax3.set_ylabel("y (Å)")
    ax3.set_zlabel("z (Å)")
    lo = positions.min(axis=0) if len(positions) else np.zeros(3)
    hi = positions.max(axis=0) if len(positions) else np.zeros(3)
    for i, (a, b) in enumerate([(0, 1), (0, 2), (1, 2)]):
        c = 3 - a - b
        half = max(0.05 * (hi[c] - lo[c]), 1.0)
        inside = np.abs(positions[:, c] - 0.5 * (lo[c] + hi[c])) <= half
        ax = fig.add_subplot(1, 4, i + 2)
        ax.scatter(
            positions[inside, a], positions[inside, b], c=colours[inside], s=4 * size, linewidths=0
        )
        ax.set_xlabel(f"{'xyz'[a]} (Å)")
        ax.set_ylabel(f"{'xyz'[b]} (Å)")
        ax.set_title(f"slice |{'xyz'[c]} - mid| ≤ {half:.1f} Å", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
    fig.suptitle(title or f"{n_parts} parts")
    return _save(fig, path)


def plot_topology(
    part: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    n_parts: int,
    path: str | Path,
    *,
    title: str = "",
    seed: int = 0,
) -> Path:
    """Communication topology: parts as nodes, links as wide as the rows exchanged.

    Positions come from networkx's spring layout (Fruchterman-Reingold) with the rows
    exchanged as spring constants, as in the Hamiltonian seed's Fig. 6.
    """
    import networkx as nx
    from matplotlib.figure import Figure

    recv, owner, _ = exchange_pairs(part, src, dst, n_parts)
    lo, hi = np.minimum(recv, owner), np.maximum(recv, owner)
    links, rows = np.unique(lo * n_parts + hi, return_counts=True)
    graph = nx.Graph()
    graph.add_nodes_from(range(n_parts))
    for link, count in zip(links.tolist(), rows.tolist()):
        graph.add_edge(link // n_parts, link % n_parts, weight=float(count))
    layout = nx.spring_layout(graph, weight="weight", seed=seed)
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    widths = 3.0 * rows / rows.max() if len(rows) else []
    nx.draw_networkx_edges(graph, layout, ax=ax, width=list(widths), alpha=0.25)
    nx.draw_networkx_nodes(
        graph, layout, ax=ax, node_size=60, node_color=_colours(n_parts)[np.arange(n_parts)]
    )
    ax.set_axis_off()
    ax.set_title(title or f"communication topology, {n_parts} parts")
    return _save(fig, path)


def plot_method_bars(results: Mapping[str, PartitionMetrics], path: str | Path) -> Path:
    """Bars per method: neighbour parts, halo rows (max and mean), node/edge imbalance."""
    from matplotlib.figure import Figure

    names = list(results)
    x = np.arange(len(names))
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    panels = [
        ("neighbour parts", "n_neighbours"),
        ("halo rows received", "halo_rows"),
        ("owned edges", "owned_edges"),
    ]
    for i, (label, field) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        values = [getattr(results[n], field) for n in names]
        ax.bar(x - 0.2, [v.max() for v in values], 0.4, label="max")
        ax.bar(x + 0.2, [v.mean() for v in values], 0.4, label="mean")
        ax.set_xticks(x, names)
        ax.set_title(label)
        if i == 0:
            ax.legend()
    ax = fig.add_subplot(1, 4, 4)
    ax.bar(x - 0.2, [results[n].node_imbalance for n in names], 0.4, label="node")
    ax.bar(x + 0.2, [results[n].edge_imbalance for n in names], 0.4, label="edge")
    ax.set_ylim(
        1.0, max(1.01, *(max(m.node_imbalance, m.edge_imbalance) for m in results.values())) * 1.01
    )
    ax.set_xticks(x, names)
    ax.set_title("imbalance (max/mean)")
    ax.legend()
    n_parts = next(iter(results.values())).n_parts if results else 0
    fig.suptitle(f"partition quality, {n_parts} parts")
    return _save(fig, path)
