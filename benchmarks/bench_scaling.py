"""Strong scaling of one potential evaluation (energy + forces + stress) over local ranks.

The SevenNet SI workload by default: alpha-quartz 8x8x8 (4,608 atoms), the SI config
(32 channels, 4 layers, l_max 3, 4.0 Å; random weights, float32 body) or ``--model
sevennet-0``. Runs 1 rank x T threads, then N ranks x T threads (gloo, Low-NN), each
with a warm-up and ``--steps`` timed evaluations on a fixed plan. Reports the slowest
rank's median step time, strong-scaling efficiency ``t1 / (N tN)``, the CPU-time
efficiency ``cpu1 / sum(cpu over ranks)`` (insensitive to other jobs on the cores), the share of the
step spent in halo exchange (pack + send/recv + unpack, per rank) and peak RSS per rank.
Writes ``<out>/bench_scaling.json`` and ``<out>/bench_scaling.png``.

    python benchmarks/bench_scaling.py --out bench_out/scaling
    python benchmarks/bench_scaling.py --model sevennet-0 --repeat 4x4x4
    python benchmarks/bench_scaling.py --smoke --out /tmp/bs
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path


def _model_spec(name: str, tmp: Path, smoke: bool) -> str:
    """A ``--model`` string every rank can load: SevenNet names as they are, presets saved."""
    if not name.startswith("preset:"):
        return name
    import torch

    from atomshard.models.checkpoint import save_checkpoint
    from atomshard.models.potential import NequIPPotential, preset

    torch.manual_seed(0)
    config = preset(name.split(":", 1)[1], species=(8, 14), dtype="float32")
    model = NequIPPotential(config)
    path = tmp / "model.pt"
    save_checkpoint(path, model, model_type="potential", config=config)
    return str(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/scaling"))
    parser.add_argument("--model", default="preset:si-config", help="preset:NAME or --model")
    parser.add_argument("--repeat", default="8x8x8", help="quartz supercell (default 4,608 atoms)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--partition", default="lownn")
    parser.add_argument("--transport", default="auto")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--recompute",
        choices=["auto", "on", "off"],
        default="on",
        help="the fused convolution's backward on every rank count (default on: the same "
        "work serially and split; 'auto' switches by edge count, which is not like-for-like)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model and cell, 1 step")
    args = parser.parse_args(argv)

    import torch

    from atomshard.comm import LocalGroup
    from atomshard.graph import Structure
    from atomshard.io.structures import builtin_structure
    from atomshard.runtime._timing import time_evaluation

    if args.smoke:
        args.model, args.repeat, args.ranks, args.steps = "preset:S", "2x1x1", [1, 2], 1
    reps = tuple(int(v) for v in args.repeat.split("x"))
    atoms = builtin_structure("quartz", reps)  # type: ignore[arg-type]
    atoms.rattle(0.02, seed=1)
    structure = Structure.from_ase(atoms)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "benchmark": "scaling",
        "structure": f"alpha-quartz {args.repeat}, {len(atoms)} atoms",
        "n_atoms": len(atoms),
        "model": args.model,
        "partition": args.partition,
        "threads_per_rank": args.threads,
        "steps": args.steps,
        "recompute": args.recompute,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "torch": torch.__version__,
        "note": "CPU shared with other jobs; slowest rank's median step",
        "worlds": [],
    }
    print(f"{report['structure']}, model {args.model}, {args.threads} thread(s) per rank")
    header = (
        f"{'ranks':>5} {'step s':>8} {'eff.':>6} {'CPU s':>8} {'CPU eff.':>8} "
        f"{'exch %':>7} {'max RSS MiB':>12}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        spec = _model_spec(args.model, Path(tmp), args.smoke)
        t1 = cpu1 = None
        for n in args.ranks:
            with LocalGroup(n, threads_per_rank=args.threads, timeout_s=600) as group:
                per_rank = group.run(
                    time_evaluation,
                    spec,
                    partition=args.partition,
                    transport=args.transport,
                    steps=args.steps,
                    recompute={"auto": "auto", "on": True, "off": False}[args.recompute],
                    root_only={"structure": structure},
                )
            step = max(r["step_s"] for r in per_rank)
            cpu = sum(r["cpu_s"] for r in per_rank)
            if n == 1 or t1 is None or cpu1 is None:
                t1, cpu1 = step * n, cpu
            exch = max(r["profile"]["exchange_fraction"] for r in per_rank)
            rss = max(r["peak_rss_mib"] for r in per_rank)
            eff = t1 / (n * step)
            cpu_eff = cpu1 / cpu
            report["worlds"].append(
                {
                    "n_ranks": n,
                    "step_s": step,
                    "efficiency": eff,
                    "cpu_s_all_ranks": cpu,
                    "cpu_efficiency": cpu_eff,
                    "max_exchange_fraction": exch,
                    "max_peak_rss_mib": rss,
                    "per_rank": per_rank,
                }
            )
            print(
                f"{n:>5} {step:>8.3f} {100 * eff:>5.1f}% {cpu:>8.3f} {100 * cpu_eff:>7.1f}% "
                f"{100 * exch:>6.2f}% {rss:>12.0f}"
            )
    (args.out / "bench_scaling.json").write_text(json.dumps(report, indent=2))
    _plot(report, args.out / "bench_scaling.png")
    print(f"wrote {args.out / 'bench_scaling.json'} and bench_scaling.png")
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, compute, exchange = [], [], []
    for world in report["worlds"]:
        for r in world["per_rank"]:
            labels.append(f"{world['n_ranks']}r/rank{r['rank']}")
            compute.append(r["profile"]["compute_s"])
            exchange.append(r["profile"]["exchange_s"])
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels)), 4))
    ax.bar(labels, compute, label="compute")
    ax.bar(labels, exchange, bottom=compute, label="halo exchange")
    ax.set_ylabel("median step, s")
    ax.set_title(f"{report['structure']}, {report['model']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
