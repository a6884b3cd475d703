"""Distributed MD neighbour-list rebuilds: local (regions, messages) vs gather on rank 0.

A quartz supercell is split over N ranks (Low-NN or grid). Each round moves every atom
by up to ``--amplitude`` Å (a function of its id, so both modes see the same positions)
and rebuilds once per mode, modes interleaved in the same processes. Reported per mode:
set-up time, median rebuild time of the slowest rank, the peak of memory newly traced
(numpy/Python, ``tracemalloc``) during one rebuild on rank 0 and on the worst other
rank, and the largest per-atom array of a local rebuild (rows). Writes
``<out>/bench_rebuild.json`` and ``<out>/bench_rebuild.png``.

    python benchmarks/bench_rebuild.py --out bench_out/rebuild
    python benchmarks/bench_rebuild.py --smoke --out /tmp/brb
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/rebuild"))
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeat", default="8x8x6", help="quartz supercell (default 8x8x6)")
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--skin", type=float, default=1.0)
    parser.add_argument("--partition", default="lownn", choices=["lownn", "grid"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--amplitude", type=float, default=0.6)
    parser.add_argument("--smoke", action="store_true", help="2 ranks, tiny cell, 1 round")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from atomshard.bench import time_rebuilds
    from atomshard.comm import LocalGroup
    from atomshard.graph import Structure
    from atomshard.io.structures import builtin_structure

    if args.smoke:
        args.ranks, args.repeat, args.rounds = [2], "2x2x1", 1
    reps = tuple(int(v) for v in args.repeat.split("x"))
    atoms = builtin_structure("quartz", reps)  # type: ignore[arg-type]
    structure = Structure.from_ase(atoms)
    modes = ["local", "gather"]
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "benchmark": "rebuild",
        "structure": f"alpha-quartz {args.repeat}, {len(atoms)} atoms",
        "n_atoms": len(atoms),
        "cutoff": args.cutoff,
        "skin": args.skin,
        "partition": args.partition,
        "amplitude": args.amplitude,
        "rounds": args.rounds,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "torch": torch.__version__,
        "note": "CPU shared with other jobs; modes interleaved in the same processes",
        "worlds": [],
    }
    print(f"{report['structure']}, cutoff {args.cutoff} + skin {args.skin} Å, {args.partition}")
    print(
        f"{'ranks':>5} {'mode':>7} {'setup ms':>9} {'rebuild ms':>11} {'rank0 MiB':>10} "
        f"{'other MiB':>10} {'max rows':>9} {'migrated':>9}"
    )
    for n in args.ranks:
        with LocalGroup(n, threads_per_rank=1) as group:
            per_rank = group.run(
                time_rebuilds,
                cutoff=args.cutoff,
                skin=args.skin,
                partition=args.partition,
                modes=modes,
                rounds=args.rounds,
                amplitude=args.amplitude,
                root_only={"structure": structure},
            )
        rows = []
        for mode in modes:
            slowest = np.max([r[mode]["rebuild_s"] for r in per_rank], axis=0)
            row = {
                "mode": mode,
                "local": per_rank[0][mode]["local"],
                "setup_s": max(r[mode]["setup_s"] for r in per_rank),
                "rebuild_s_median": float(np.median(slowest)),
                "rebuild_s_slowest_rank": slowest.tolist(),
                "rank0_peak_traced_bytes": per_rank[0][mode]["peak_traced_bytes"],
                "other_peak_traced_bytes": max(
                    [r[mode]["peak_traced_bytes"] for r in per_rank[1:]], default=0
                ),
                # a gather rebuild holds every atom on rank 0
                "max_rows": max(r[mode]["peak_rows"] for r in per_rank)
                if per_rank[0][mode]["local"]
                else len(atoms),
                "n_migrated": per_rank[0][mode]["n_migrated"],
                "n_owned_per_rank": [r[mode]["n_owned"][-1] for r in per_rank],
            }
            rows.append(row)
            print(
                f"{n:>5} {mode:>7} {1e3 * row['setup_s']:>9.1f} "
                f"{1e3 * row['rebuild_s_median']:>11.1f} "
                f"{row['rank0_peak_traced_bytes'] / 2**20:>10.2f} "
                f"{row['other_peak_traced_bytes'] / 2**20:>10.2f} {row['max_rows']:>9} "
                f"{row['n_migrated']:>9}"
            )
        report["worlds"].append({"n_ranks": n, "modes": rows})
    from atomshard.utils.files import atomic_write

    with atomic_write(args.out / "bench_rebuild.json") as handle:
        handle.write(json.dumps(report, indent=2))
    _plot(report, args.out / "bench_rebuild.png")
    print(f"wrote {args.out / 'bench_rebuild.json'} and bench_rebuild.png")
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = report["worlds"]
    labels = [str(w["n_ranks"]) for w in worlds]
    x = list(range(len(worlds)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for k, mode in enumerate(("local", "gather")):
        colour = ("tab:blue", "tab:orange")[k]
        shift = [v + (k - 0.5) * 0.38 for v in x]
        times = [1e3 * w["modes"][k]["rebuild_s_median"] for w in worlds]
        mem = [w["modes"][k]["rank0_peak_traced_bytes"] / 2**20 for w in worlds]
        ax1.bar(shift, times, width=0.36, color=colour, label=mode)
        ax2.bar(shift, mem, width=0.36, color=colour, label=mode)
    ax1.set(xticks=x, xticklabels=labels, xlabel="ranks", ylabel="rebuild ms (slowest rank)")
    ax2.set(xticks=x, xticklabels=labels, xlabel="ranks", ylabel="rank 0 peak traced MiB")
    ax1.legend()
    fig.suptitle(f"{report['structure']}, {report['partition']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
