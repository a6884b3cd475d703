"""Strong scaling of the graph-parallel Hamiltonian forward pass, 1 -> N local ranks.

Si64 (diamond, ``bulk('Si', 'diamond', 5.43, cubic=True) * (2, 2, 2)``) tiled
``--repeat`` times (default 4x4x4: 4,096 atoms), a **randomly initialised** SO(2) model of
the seed's size (l_max 4, E 16, hidden 32, 3 layers, float32 body; s+p basis as in the
DeePTB Si64 data; no trained model of this size exists), cutoff ``--cutoff`` Å. For each
rank count: Low-NN partition, ``--steps`` timed forward passes after a warm-up, each rank
1 torch thread. Reports per rank the pack / send-recv / unpack / compute split (the
runtime's ExchangeProfiler, as ``eval --profile``), the slowest rank's median step, the
strong-scaling efficiency ``t1 / (N tN)``, the CPU-time efficiency ``cpu1 / sum(cpu)``,
the redundant reverse-edge share and peak RSS. Writes ``<out>/bench_hamiltonian_scaling.json``
and ``.png``.

    python benchmarks/bench_hamiltonian_scaling.py --out bench_out/hscaling
    python benchmarks/bench_hamiltonian_scaling.py --smoke --out /tmp/hs
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/hamiltonian_scaling"))
    parser.add_argument("--repeat", default="4x4x4", help="tiling of Si64 (default 4,096 atoms)")
    parser.add_argument("--cutoff", type=float, default=4.0, help="graph cutoff, Å")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--partition", default="lownn")
    parser.add_argument("--transport", default="auto")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="Si64, tiny model, 1 step")
    args = parser.parse_args(argv)

    import torch
    from ase.build import bulk

    from atomshard.bench import time_hamiltonian_forward
    from atomshard.comm import LocalGroup, NullCommunicator
    from atomshard.graph import Structure
    from atomshard.models.hamiltonian import HamiltonianConfig

    size = {"l_max": 4, "channels": 16, "hidden": 32, "n_layers": 3}
    if args.smoke:
        args.repeat, args.steps, args.ranks, args.cutoff = "1x1x1", 1, [1, 2], 3.0
        size = {"l_max": 2, "channels": 4, "hidden": 6, "n_layers": 2}
    config = HamiltonianConfig(basis={"Si": "1s1p"}, cutoff=args.cutoff, **size)
    reps = tuple(int(v) for v in args.repeat.split("x"))
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2) * reps
    structure = Structure.from_ase(atoms)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "benchmark": "hamiltonian_scaling",
        "structure": f"Si64 tiled {args.repeat}, {len(atoms)} atoms",
        "n_atoms": len(atoms),
        "model": {**size, "basis": "Si 1s1p", "dtype": "float32", "weights": "random"},
        "cutoff": args.cutoff,
        "partition": args.partition,
        "steps": args.steps,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "torch": torch.__version__,
        "note": "2-core CPU shared with other jobs; 1 thread per rank; slowest rank's median",
        "worlds": [],
    }
    print(f"{report['structure']}, cutoff {args.cutoff} Å, model {report['model']}")
    print(
        f"{'ranks':>5} {'step s':>8} {'eff.':>6} {'CPU s':>8} {'CPU eff.':>8} "
        f"{'pack ms':>8} {'s/r ms':>8} {'unpack':>7} {'rev. edges':>10} {'RSS MiB':>8}"
    )
    t1 = cpu1 = None
    for n in args.ranks:
        options = dict(partition=args.partition, transport=args.transport, steps=args.steps)
        if n == 1:  # in this process, one thread like every spawned rank
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                per_rank = [
                    time_hamiltonian_forward(
                        NullCommunicator(), config, structure=structure, **options
                    )
                ]
            finally:
                torch.set_num_threads(threads)
        else:
            with LocalGroup(n, threads_per_rank=1, timeout_s=900) as group:
                per_rank = group.run(
                    time_hamiltonian_forward,
                    config,
                    root_only={"structure": structure},
                    **options,
                )
        step = max(r["step_s"] for r in per_rank)
        cpu = sum(r["cpu_s"] for r in per_rank)
        if t1 is None or cpu1 is None:
            t1, cpu1 = step * n, cpu
        edges = sum(r["n_owned_edges"] for r in per_rank)
        rev = sum(r["n_reverse_edges"] for r in per_rank)
        prof = [r["profile"] for r in per_rank]
        world = {
            "n_ranks": n,
            "step_s": step,
            "efficiency": t1 / (n * step),
            "cpu_s_all_ranks": cpu,
            "cpu_efficiency": cpu1 / cpu,
            "reverse_edge_fraction": rev / max(edges, 1),
            "max_pack_s": max(p["pack_s"] for p in prof),
            "max_send_recv_s": max(p["send_recv_s"] for p in prof),
            "max_unpack_s": max(p["unpack_s"] for p in prof),
            "max_peak_rss_mib": max(r["peak_rss_mib"] for r in per_rank),
            "per_rank": per_rank,
        }
        report["worlds"].append(world)
        print(
            f"{n:>5} {step:>8.2f} {100 * world['efficiency']:>5.1f}% {cpu:>8.2f} "
            f"{100 * world['cpu_efficiency']:>7.1f}% {1e3 * world['max_pack_s']:>8.2f} "
            f"{1e3 * world['max_send_recv_s']:>8.2f} {1e3 * world['max_unpack_s']:>7.2f} "
            f"{100 * world['reverse_edge_fraction']:>9.2f}% {world['max_peak_rss_mib']:>8.0f}"
        )
        for r in per_rank:
            p = r["profile"]
            print(
                f"      rank {r['rank']}: {r['n_owned']} atoms, {r['n_halo']} halo, "
                f"{r['n_owned_edges']} edges (+{r['n_reverse_edges']} reverse), step "
                f"{r['step_s']:.2f} s = compute {p['compute_s']:.2f} + pack "
                f"{1e3 * p['pack_s']:.1f} ms + send/recv {1e3 * p['send_recv_s']:.1f} ms + "
                f"unpack {1e3 * p['unpack_s']:.1f} ms"
            )
    from atomshard.utils.files import atomic_write

    with atomic_write(str(args.out / "bench_hamiltonian_scaling.json")) as handle:
        handle.write(json.dumps(report, indent=2))
    _plot(report, args.out / "bench_hamiltonian_scaling.png")
    print(f"wrote {args.out / 'bench_hamiltonian_scaling.json'} and .png")
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, parts = [], {"compute": [], "pack": [], "send/recv": [], "unpack": []}
    for world in report["worlds"]:
        for r in world["per_rank"]:
            p = r["profile"]
            labels.append(f"{world['n_ranks']} ranks\nrank {r['rank']}")
            parts["compute"].append(p["compute_s"])
            parts["pack"].append(p["pack_s"])
            parts["send/recv"].append(p["send_recv_s"])
            parts["unpack"].append(p["unpack_s"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 4), gridspec_kw={"width_ratios": [2, 1]})
    bottom = [0.0] * len(labels)
    for name, values in parts.items():
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("median forward pass, s")
    ax.set_title(report["structure"], fontsize=9)
    ax.legend(fontsize=8)
    ns = [w["n_ranks"] for w in report["worlds"]]
    ax2.plot(ns, [w["efficiency"] for w in report["worlds"]], "o-", label="wall time")
    ax2.plot(ns, [w["cpu_efficiency"] for w in report["worlds"]], "s--", label="CPU time")
    ax2.set_xticks(ns)
    ax2.set_ylim(0, 1.1)
    ax2.set_xlabel("ranks")
    ax2.set_ylabel("strong-scaling efficiency")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
