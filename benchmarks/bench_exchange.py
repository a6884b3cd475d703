"""Halo-exchange transports on gloo: batch_isend_irecv (p2p) vs one all_to_all_single.

For each world size, a quartz supercell is partitioned (grid by default) and every rank
exchanges feature tensors ``[n_local, width]`` (float32) through its halo plan: forward
(pack, send/recv into halo rows) and backward (halo gradients home, index_add). Times
are medians over ``--repeats`` barrier-separated rounds, per rank; the table shows the
slowest rank. Writes ``<out>/bench_exchange.json`` and ``<out>/bench_exchange.png``.

    python benchmarks/bench_exchange.py --out bench_out/exchange
    python benchmarks/bench_exchange.py --smoke --out /tmp/bx
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/exchange"))
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeat", default="6x6x4", help="quartz supercell (default 6x6x4)")
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--partition", default="grid")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 128, 512, 2048])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="2 ranks, tiny cell, 2 rounds")
    args = parser.parse_args(argv)

    import torch

    from atomshard.bench import time_exchange
    from atomshard.comm import LocalGroup
    from atomshard.graph import Structure
    from atomshard.io.structures import builtin_structure

    if args.smoke:
        args.ranks, args.repeat, args.widths, args.repeats = [2], "2x1x1", [8, 64], 2
    reps = tuple(int(v) for v in args.repeat.split("x"))
    atoms = builtin_structure("quartz", reps)  # type: ignore[arg-type]
    structure = Structure.from_ase(atoms)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "benchmark": "exchange",
        "structure": f"alpha-quartz {args.repeat}, {len(atoms)} atoms",
        "n_atoms": len(atoms),
        "cutoff": args.cutoff,
        "partition": args.partition,
        "dtype": "float32",
        "backend": "gloo",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "torch": torch.__version__,
        "note": "CPU shared with other jobs; medians of barrier-separated rounds",
        "worlds": [],
    }
    print(f"{report['structure']}, cutoff {args.cutoff} Å, partition {args.partition}")
    print(f"{'ranks':>5} {'transport':>10} {'width':>6} {'fwd ms':>8} {'bwd ms':>8} {'MB/rank':>8}")
    for n in args.ranks:
        with LocalGroup(n, threads_per_rank=1) as group:
            per_rank = group.run(
                time_exchange,
                cutoff=args.cutoff,
                partition=args.partition,
                widths=args.widths,
                transports=["p2p", "all_to_all"],
                repeats=args.repeats,
                root_only={"structure": structure},
            )
        rows = []
        for i, run in enumerate(per_rank[0]["runs"]):
            fwd = max(r["runs"][i]["forward_s"] for r in per_rank)
            bwd = max(r["runs"][i]["backward_s"] for r in per_rank)
            mb = max(r["rows_sent"] for r in per_rank) * run["width"] * 4 / 1e6
            rows.append({**run, "forward_s": fwd, "backward_s": bwd, "max_mb_sent": mb})
            print(
                f"{n:>5} {run['transport']:>10} {run['width']:>6} {1e3 * fwd:>8.3f} "
                f"{1e3 * bwd:>8.3f} {mb:>8.3f}"
            )
        report["worlds"].append({"n_ranks": n, "per_rank": per_rank, "slowest_rank": rows})
    (args.out / "bench_exchange.json").write_text(json.dumps(report, indent=2))
    _plot(report, args.out / "bench_exchange.png")
    print(f"wrote {args.out / 'bench_exchange.json'} and bench_exchange.png")
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for world in report["worlds"]:
        for transport, style in (("p2p", "-o"), ("all_to_all", "--s")):
            rows = [r for r in world["slowest_rank"] if r["transport"] == transport]
            ax.plot(
                [r["width"] for r in rows],
                [1e3 * (r["forward_s"] + r["backward_s"]) for r in rows],
                style,
                label=f"{world['n_ranks']} ranks, {transport}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("feature width (float32 per atom)")
    ax.set_ylabel("forward + backward exchange, ms (slowest rank)")
    ax.set_title(report["structure"] + ", gloo")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
