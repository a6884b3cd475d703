"""``atomshard partition``: partition a structure's graph and report the quality.

Examples::

    atomshard partition a-hfo2 --repeat 2 --cutoff 12 --parts 64 --method all \\
        --json out/partition.json --plots out/
    atomshard partition POSCAR --cutoff 5 --parts 8 --method lownn --save-plans plans/
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from atomshard.commands._common import add_repeat_argument, parse_repeat
from atomshard.errors import InputError

#: ``--method all`` runs these.
ALL_METHODS = ("lownn", "metis", "grid")
REPORT_FORMAT = "atomshard.partition_report"
REPORT_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("structure", help="structure file (anything ASE reads) or built-in name")
    parser.add_argument("--cutoff", type=float, required=True, help="graph cutoff radius, Å")
    parser.add_argument("--parts", type=int, required=True, help="number of parts K (>= 1)")
    parser.add_argument(
        "--method",
        default="all",
        choices=[*ALL_METHODS, "auto", "all"],
        help="partitioner; 'all' compares the three, 'auto' keeps the cheapest (default: all)",
    )
    add_repeat_argument(parser, help="tile the structure")
    parser.add_argument("--format", default=None, help="ASE file format (default: guessed)")
    parser.add_argument("--frame", type=int, default=0, help="frame of a trajectory (default 0)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--plots", type=Path, default=None, help="write PNG figures here")
    parser.add_argument(
        "--save-plans", type=Path, default=None, help="write one halo plan per part (.npz) here"
    )
    cost = parser.add_argument_group("communication cost model (ranks methods, guides lownn)")
    cost.add_argument("--embedding", type=int, default=16, help="channels E (default 16)")
    cost.add_argument("--lmax", type=int, default=4, help="l_max of a row (default 4)")
    cost.add_argument("--latency", type=float, default=20e-6, help="s per neighbour (20e-6)")
    cost.add_argument("--bandwidth", type=float, default=10e9, help="bytes/s (default 10e9)")


def _table(results: dict[str, Any]) -> str:
    head = (
        f"{'method':<12}{'time s':>9}{'nbrs max':>10}{'mean':>7}{'halo max':>10}{'mean':>9}"
        f"{'sent max':>10}{'edge imb':>10}{'node imb':>10}{'split':>7}{'empty':>7}{'est ms':>9}"
    )
    lines = [head, "-" * len(head)]
    for _, m in results.values():
        s = m.summary()
        lines.append(
            f"{m.method:<12}{s['partition_time_s']:>9.3f}{s['n_neighbours']['max']:>10}"
            f"{s['n_neighbours']['mean']:>7.1f}{s['halo_rows']['max']:>10}"
            f"{s['halo_rows']['mean']:>9.0f}{s['rows_sent']['max']:>10}"
            f"{s['edge_imbalance']:>10.4f}{s['node_imbalance']:>10.4f}"
            f"{s['disconnected_parts']:>7}{s['empty_parts']:>7}{1e3 * s['estimated_time_s']:>9.3f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from atomshard.graph import neighbor_list
    from atomshard.io.structures import read_structures
    from atomshard.partition import (
        CommCostModel,
        PartitionInput,
        PartitionWarning,
        build_halo_plans,
        compare,
    )
    from atomshard.utils.files import atomic_write

    if args.parts < 1:
        raise InputError(f"--parts must be >= 1, got {args.parts}")
    if not args.cutoff > 0:
        raise InputError(f"--cutoff must be positive (Å), got {args.cutoff}")
    cost = CommCostModel(
        latency_s=args.latency,
        bandwidth_Bps=args.bandwidth,
        embedding=args.embedding,
        l_max=args.lmax,
    )
    frames = read_structures(args.structure, format=args.format, repeat=parse_repeat(args.repeat))
    if not -len(frames) <= args.frame < len(frames):
        raise InputError(f"--frame {args.frame}: {args.structure!r} has {len(frames)} frames")
    atoms = frames[args.frame]
    positions, cell, pbc = atoms.positions, np.array(atoms.cell[:]), np.array(atoms.pbc)
    start = time.perf_counter()
    src, dst, shifts = neighbor_list(positions, cell, pbc, cutoff=args.cutoff)
    nl_time = time.perf_counter() - start
    graph = PartitionInput(positions, cell, pbc, src, dst, shifts, float(args.cutoff))
    print(
        f"{args.structure}: {len(atoms)} atoms, {len(src)} edges at {args.cutoff} Å "
        f"(neighbour list {nl_time:.2f} s), {args.parts} parts"
    )
    methods = ALL_METHODS if args.method == "all" else (args.method,)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PartitionWarning)
        results = compare(graph, args.parts, methods=methods, cost_model=cost)
    for w in caught:
        print(f"warning: {w.message}")
    print(_table(results))
    best = min(results, key=lambda n: results[n][1].estimated_time_s)
    print(f"lowest estimated exchange + message time: {results[best][1].method}")

    if args.json is not None:
        report = {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "structure": {
                "source": str(args.structure),
                "n_atoms": len(atoms),
                "cell": cell.tolist(),
                "pbc": pbc.tolist(),
                "repeat": list(parse_repeat(args.repeat)),
            },
            "cutoff": float(args.cutoff),
            "n_edges": len(src),
            "neighbor_list_time_s": nl_time,
            "n_parts": args.parts,
            "cost_model": {**cost.__dict__, "row_bytes": cost.row_bytes},
            "best": best,
            "methods": {
                name: {**m.to_dict(), "part": part.tolist()} for name, (part, m) in results.items()
            },
        }
        with atomic_write(args.json) as handle:
            json.dump(report, handle, indent=1)
        print(f"wrote {args.json}")
    if args.plots is not None:
        from atomshard.partition.plots import plot_method_bars, plot_parts, plot_topology

        for name, (part, m) in results.items():
            label = f"{m.method}, {args.parts} parts, r_cut {args.cutoff} Å"
            plot_parts(positions, part, args.parts, args.plots / f"parts_{name}.png", title=label)
            plot_topology(
                part,
                src,
                dst,
                args.parts,
                args.plots / f"topology_{name}.png",
                title=f"topology: {label}",
            )
        plot_method_bars({m.method: m for _, m in results.values()}, args.plots / "methods.png")
        print(f"wrote figures to {args.plots}/")
    if args.save_plans is not None:
        part = results[best][0]
        plans = build_halo_plans(src, dst, shifts, len(atoms), part, args.parts)
        for plan in plans:
            plan.save(args.save_plans / f"plan_{plan.rank:05d}.npz")
        print(f"wrote {len(plans)} halo plans ({results[best][1].method}) to {args.save_plans}/")
    return 0
