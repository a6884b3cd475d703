"""Weak scaling simulated by the partitioning cost model (the Hamiltonian seed's Fig. 7c-d).

No ranks are started: for each size a unit cell is tiled ``T`` times, the tiled graph is
split into ``parts_per_tile * T`` parts (Low-NN and grid), and the partition metrics give
per rank: halo rows (node embeddings received per exchange), communication volume
(halo rows x row bytes, one row = ``(l_max+1)^2 * E`` float32 = 1,600 B for E = 16,
l_max 4), neighbour parts, owned edges, and the :class:`CommCostModel` estimate of the
slowest rank. Tiling is 1-D (``T x 1 x 1``) or 3-D (as cubic as possible, ``2x2x2`` for
8 tiles ... ``4x4x4`` for 64).

Default unit cell: the built-in amorphous HfO2 with 375 atoms (16.5 Å edge) at r_cut 6 Å
and 8 parts per tile -- the seed's setting (3,000 atoms, 33 Å, 12 Å, 8 ranks per tile up
to 512 ranks) scaled by 1/2 in every length. Part shapes relative to the cutoff are the
same, so neighbour counts are comparable; halo rows are 1/8 of full scale (same density,
1/8 of the volume). The full-scale setting (``--atoms 3000 --cutoff 12``) has 115 M edges
at 64 tiles, too large for this box.

Writes ``OUT/bench_weak_scaling.json`` and ``.png``; ``--smoke`` runs a tiny cell in
seconds.

    python benchmarks/bench_weak_scaling.py --out results/
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("lownn", "grid")


def tiling(n_tiles: int, dims: int) -> tuple[int, int, int]:
    """``(a, b, c)`` with ``a*b*c == n_tiles``: ``(n, 1, 1)`` for 1-D, near-cubic for 3-D."""
    if dims == 1:
        return (n_tiles, 1, 1)
    shapes = [
        (a, b, n_tiles // (a * b))
        for a in range(1, n_tiles + 1)
        for b in range(1, a + 1)
        if n_tiles % (a * b) == 0 and n_tiles // (a * b) <= b
    ]
    return min(shapes, key=lambda t: (t[0], t[0] - t[2]))


def measure(
    unit: Any, cutoff: float, n_tiles: int, dims: int, parts_per_tile: int, channels: int
) -> list[dict[str, Any]]:
    """Metrics of Low-NN and grid partitions of one tiled structure."""
    from atomshard.graph import AtomicGraph
    from atomshard.partition import CommCostModel, as_partition_input, compare

    reps = tiling(n_tiles, dims)
    t0 = time.perf_counter()
    graph = AtomicGraph.from_ase(unit.repeat(reps), cutoff)
    inp = as_partition_input(graph)
    build_s = time.perf_counter() - t0
    n_parts = parts_per_tile * n_tiles
    cost = CommCostModel(embedding=channels, l_max=4)
    rows = []
    for method, (_, m) in compare(inp, n_parts, methods=METHODS, cost_model=cost).items():
        halo = m.halo_rows.astype(np.float64)
        rows.append(
            {
                "dims": dims,
                "tiles": list(reps),
                "n_tiles": n_tiles,
                "parts": n_parts,
                "method": method,
                "atoms": inp.n_atoms,
                "edges": inp.n_edges,
                "halo_rows_mean": float(halo.mean()),
                "halo_rows_max": int(halo.max()),
                "volume_mib_mean": float(halo.mean() * cost.row_bytes / 2**20),
                "volume_mib_max": float(halo.max() * cost.row_bytes / 2**20),
                "neighbours_mean": float(m.n_neighbours.mean()),
                "neighbours_max": int(m.n_neighbours.max()),
                "edges_per_rank_mean": float(m.owned_edges.mean()),
                "edge_imbalance": m.edge_imbalance,
                "estimated_time_s": m.estimated_time_s,
                "partition_s": m.partition_time_s,
                "graph_s": build_s,
            }
        )
    return rows


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    style = {("lownn", 1): "C0--", ("lownn", 3): "C0-", ("grid", 1): "C1--", ("grid", 3): "C1-"}
    for (method, dims), fmt in style.items():
        pts = sorted(
            (r["parts"], r["volume_mib_mean"], r["neighbours_mean"], r["estimated_time_s"])
            for r in rows
            if r["method"] == method and r["dims"] == dims
        )
        if not pts:
            continue
        p = [q[0] for q in pts]
        label = f"{method}, {dims}-D tiling"
        axes[0].plot(p, [q[1] for q in pts], fmt, marker="o", label=label)
        axes[1].plot(p, [q[2] for q in pts], fmt, marker="o", label=label)
        t1 = pts[0][3]
        axes[2].plot(p, [t1 / q[3] for q in pts], fmt, marker="o", label=label)
    titles = (
        "received per rank per exchange (MiB)",
        "neighbour ranks per rank (mean)",
        "cost-model weak-scaling efficiency",
    )
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ranks (parts)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=375, help="unit cell (amorphous HfO2)")
    ap.add_argument("--cutoff", type=float, default=6.0, help="Å")
    ap.add_argument("--parts-per-tile", type=int, default=8)
    ap.add_argument("--tiles", default="1,2,4,8,16,32,64")
    ap.add_argument("--dims", default="1,3")
    ap.add_argument("--channels", type=int, default=16, help="E, for the row size")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--smoke", action="store_true", help="48-atom cell, 3 Å, up to 8 tiles")
    args = ap.parse_args(argv)
    if args.smoke:
        args.atoms, args.cutoff, args.parts_per_tile, args.tiles = 48, 3.0, 2, "1,2,8"
    from atomshard.io.amorphous import amorphous_hfo2

    unit = amorphous_hfo2(max(args.atoms // 3, 1), seed=0)
    rows: list[dict[str, Any]] = []
    print(
        f"{'tiling':>8} {'ranks':>5} {'method':>6} {'atoms':>7} {'edges':>9} "
        f"{'halo rows':>15} {'MiB/rank':>13} {'neighbours':>11} {'eff.':>5}",
        flush=True,
    )
    for dims in (int(d) for d in args.dims.split(",")):
        first: dict[str, float] = {}
        for n_tiles in (int(t) for t in args.tiles.split(",")):
            for r in measure(unit, args.cutoff, n_tiles, dims, args.parts_per_tile, args.channels):
                first.setdefault(r["method"], r["estimated_time_s"])
                r["efficiency"] = first[r["method"]] / r["estimated_time_s"]
                rows.append(r)
                print(
                    f"{'x'.join(map(str, r['tiles'])):>8} {r['parts']:>5} {r['method']:>6} "
                    f"{r['atoms']:>7} {r['edges']:>9} "
                    f"{r['halo_rows_mean']:>8.0f}/{r['halo_rows_max']:<6} "
                    f"{r['volume_mib_mean']:>6.2f}/{r['volume_mib_max']:<6.2f} "
                    f"{r['neighbours_mean']:>5.1f}/{r['neighbours_max']:<5} "
                    f"{r['efficiency']:>5.2f}",
                    flush=True,
                )
    unit_cell = float(np.cbrt(abs(np.linalg.det(unit.cell.array))))
    report = {
        "benchmark": "weak_scaling",
        "smoke": args.smoke,
        "unit_cell": {"atoms": len(unit), "edge_A": unit_cell, "cutoff_A": args.cutoff},
        "parts_per_tile": args.parts_per_tile,
        "channels": args.channels,
        "row_bytes": (4 + 1) ** 2 * args.channels * 4,
        "scale_to_seed": {"length": 12.0 / args.cutoff, "rows": (12.0 / args.cutoff) ** 3},
        "load": os.getloadavg(),
        "rows": rows,
    }
    from atomshard.utils.files import atomic_write

    out = Path(args.out)
    with atomic_write(out / "bench_weak_scaling.json") as handle:
        json.dump(report, handle, indent=1)
    _plot(out / "bench_weak_scaling.png", rows)
    assert all(math.isfinite(r["estimated_time_s"]) for r in rows)
    return report


if __name__ == "__main__":
    main()
