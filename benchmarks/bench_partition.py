"""Partition quality and time: Low-NN vs METIS vs grid on amorphous HfO2.

Default workload (the Hamiltonian seed's Fig. 5): the 3,000-atom amorphous-like HfO2 cell
tiled 2x2x2 (24,000 atoms) at r_cut 12 and 14 Å, into 32, 64 and 128 parts. For every
cutoff it times the neighbour list (vesin, sorted) once; for every (cutoff, K, method)
the partitioner (warm-up, then median and spread of ``--repeats`` runs; METIS once
unless ``--metis-repeats``), the metrics and, for Low-NN, the halo-plan build.

Writes ``<out>/bench_partition.json``, ``<out>/bench_partition.png`` and the Fig. 6-like
topologies at the largest K and first cutoff; ``--smoke`` runs a tiny case in seconds.

    python benchmarks/bench_partition.py --out bench_out/partition
    python benchmarks/bench_partition.py --smoke --out /tmp/bp
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

METHODS = ("lownn", "metis", "grid")


def _timed(fn, repeats: int, warmup: bool):
    if warmup:
        fn()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/partition"))
    parser.add_argument("--cutoffs", type=float, nargs="+", default=[12.0, 14.0])
    parser.add_argument("--parts", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--tile", type=int, default=2, help="tiling of the 3,000-atom cell")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--metis-repeats", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--smoke", action="store_true", help="300 atoms, 5 Å, 4/8 parts, 1 run")
    args = parser.parse_args(argv)

    from atomshard.graph import neighbor_list
    from atomshard.io.amorphous import amorphous_hfo2, tile
    from atomshard.partition import (
        PARTITIONERS,
        PartitionInput,
        build_halo_plans,
        partition_metrics,
    )
    from atomshard.partition.plots import plot_topology

    if args.smoke:
        atoms = amorphous_hfo2(100)
        args.cutoffs, args.parts, args.repeats, args.metis_repeats = [5.0], [4, 8], 1, 1
    else:
        atoms = tile(amorphous_hfo2(), (args.tile,) * 3)
    args.out.mkdir(parents=True, exist_ok=True)
    positions, cell, pbc = atoms.positions, np.array(atoms.cell[:]), np.array(atoms.pbc)
    report: dict = {
        "benchmark": "partition",
        "structure": f"amorphous-like HfO2 (random packing), {len(atoms)} atoms",
        "n_atoms": len(atoms),
        "cell_lengths": atoms.cell.lengths().tolist(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "note": "CPU shared with other jobs while measured; times are indicative",
        "runs": [],
        "neighbor_list": {},
    }
    for cutoff in args.cutoffs:
        (src, dst, shifts), nl_times = _timed(
            lambda c=cutoff: neighbor_list(positions, cell, pbc, cutoff=c), 1, False
        )
        report["neighbor_list"][str(cutoff)] = {"n_edges": len(src), "time_s": nl_times[0]}
        print(f"r_cut {cutoff} Å: {len(src):,} edges, neighbour list {nl_times[0]:.2f} s")
        graph = PartitionInput(positions, cell, pbc, src, dst, shifts, cutoff)
        for k in args.parts:
            for method in args.methods:
                fn = PARTITIONERS[method]
                reps = args.metis_repeats if method == "metis" else args.repeats
                part, times = _timed(lambda f=fn, k=k, g=graph: f(g, k), reps, method != "metis")
                start = time.perf_counter()
                m = partition_metrics(
                    part, src, dst, k, method=method, partition_time_s=statistics.median(times)
                )
                metrics_time = time.perf_counter() - start
                plan_time = None
                if method == "lownn":
                    start = time.perf_counter()
                    build_halo_plans(src, dst, shifts, len(atoms), part, k)
                    plan_time = time.perf_counter() - start
                s = m.summary()
                row = {
                    "cutoff": cutoff,
                    "n_parts": k,
                    "method": method,
                    "times_s": times,
                    "metrics_time_s": metrics_time,
                    "plan_build_time_s": plan_time,
                    **s,
                }
                report["runs"].append(row)
                print(
                    f"  K={k:4d} {method:6s} t={s['partition_time_s']:8.3f}s "
                    f"(min {min(times):.3f}, max {max(times):.3f}) "
                    f"nbrs {s['n_neighbours']['max']:3d}/{s['n_neighbours']['mean']:5.1f} "
                    f"halo {s['halo_rows']['max']:6d}/{s['halo_rows']['mean']:7.0f} "
                    f"edge imb {s['edge_imbalance']:.4f} node imb {s['node_imbalance']:.4f} "
                    f"split parts {s['disconnected_parts']}"
                )
                if k == max(args.parts) and cutoff == args.cutoffs[0] and method != "grid":
                    plot_topology(
                        part,
                        src,
                        dst,
                        k,
                        args.out / f"topology_{method}_{k}.png",
                        title=f"{method}, {k} parts, r_cut {cutoff} Å",
                    )
        del src, dst, shifts  # free ~1 GB before the next cutoff's list is built
    with open(args.out / "bench_partition.json", "w") as handle:
        json.dump(report, handle, indent=1)
    _plot(report, args.out / "bench_partition.png")
    print(f"wrote {args.out}/bench_partition.json and .png")
    return report


def _plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 3.5), layout="constrained")
    panels = [
        ("partition time (s)", lambda r: r["partition_time_s"], True),
        ("max neighbour parts", lambda r: r["n_neighbours"]["max"], False),
        ("max halo rows", lambda r: r["halo_rows"]["max"], False),
        ("edge imbalance", lambda r: r["edge_imbalance"], False),
    ]
    cutoffs = sorted({r["cutoff"] for r in report["runs"]})
    methods = list(dict.fromkeys(r["method"] for r in report["runs"]))
    for i, (label, get, log) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        for j, method in enumerate(methods):
            for style, cutoff in zip(("-o", "--s", ":^"), cutoffs):
                rows = [
                    r for r in report["runs"] if r["method"] == method and r["cutoff"] == cutoff
                ]
                ax.plot(
                    [r["n_parts"] for r in rows],
                    [get(r) for r in rows],
                    style,
                    color=f"C{j}",
                    label=f"{method} {cutoff:g} Å",
                )
        ax.set_xscale("log", base=2)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("parts")
        ax.set_title(label)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(report["structure"])
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
