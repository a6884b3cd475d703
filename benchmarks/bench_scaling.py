"""Strong scaling of one potential evaluation (energy + forces + stress) over local ranks.

The SevenNet SI workload by default: alpha-quartz 8x8x8 (4,608 atoms), the SI config
(32 channels, 4 layers, l_max 3, 4.0 Å; random weights, float32 body) or ``--model
sevennet-0``. Runs 1 rank x T threads, then N ranks x T threads (gloo, Low-NN), each
with a warm-up and ``--steps`` timed evaluations on a fixed plan. Reports the slowest
rank's median step time, strong-scaling efficiency ``t1 / (N tN)``, the CPU-time
efficiency ``cpu1 / sum(cpu over ranks)`` (insensitive to other jobs on the cores), the share of the
step spent in halo exchange (pack + send/recv + unpack, per rank) and peak RSS per rank.
With ``--overlap both`` (the default) every multi-rank run is made with each layer's
exchange overlapped with its interior nodes and without. A rank's wait in an exchange is
the transfer plus the time the other rank is late (load imbalance, which no overlap can
hide); per exchange call the smallest wait over the ranks is the transfer's exposed part.
Summed over the calls that overlap, exposed with overlap against exposed without gives the
share of the transfer that is hidden; the total wait is reported beside it.
Writes ``<out>/bench_scaling.json`` and ``<out>/bench_scaling.png``.

    python benchmarks/bench_scaling.py --out bench_out/scaling
    python benchmarks/bench_scaling.py --model sevennet-0 --repeat 4x4x4
    python benchmarks/bench_scaling.py --smoke --out /tmp/bs
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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
        "--rounds",
        type=int,
        default=1,
        help="repeat the whole list of rank counts this many times, interleaved; the "
        "summary takes each rank count's median over rounds (steadier on a shared box)",
    )
    parser.add_argument(
        "--recompute",
        choices=["auto", "on", "off"],
        default="on",
        help="the fused convolution's backward on every rank count (default on: the same "
        "work serially and split; 'auto' switches by edge count, which is not like-for-like)",
    )
    parser.add_argument(
        "--overlap",
        choices=["both", "on", "off"],
        default="both",
        help="overlap each layer's halo exchange with its interior nodes on multi-rank runs: "
        "on, off, or both (each run twice, to measure how much of the exchange is hidden)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model and cell, 1 step")
    args = parser.parse_args(argv)

    import torch

    from atomshard.bench import time_evaluation
    from atomshard.comm import LocalGroup
    from atomshard.graph import Structure
    from atomshard.io.structures import builtin_structure

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
        "overlap": args.overlap,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "torch": torch.__version__,
        "note": "CPU shared with other jobs; slowest rank's median step",
        "rounds": args.rounds,
        "worlds": [],
    }
    print(f"{report['structure']}, model {args.model}, {args.threads} thread(s) per rank")
    header = (
        f"{'ranks':>5} {'overlap':>7} {'step s':>8} {'eff.':>6} {'CPU s':>8} {'CPU eff.':>8} "
        f"{'exch %':>7} {'min exch %':>10} {'max RSS MiB':>12}"
    )
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        spec = _model_spec(args.model, Path(tmp), args.smoke)
        for round_ in range(args.rounds):
            for n, overlap in _runs(args.ranks, args.overlap):
                with LocalGroup(n, threads_per_rank=args.threads, timeout_s=600) as group:
                    per_rank = group.run(
                        time_evaluation,
                        spec,
                        partition=args.partition,
                        transport=args.transport,
                        steps=args.steps,
                        recompute={"auto": "auto", "on": True, "off": False}[args.recompute],
                        overlap=overlap == "on",
                        root_only={"structure": structure},
                    )
                report["worlds"].append(_world(n, overlap, round_, per_rank))
                _print_row(report["worlds"][-1], report["worlds"])
    report["summary"] = _summary(report["worlds"], _runs(args.ranks, args.overlap))
    if args.rounds > 1:
        print(f"median over {args.rounds} rounds:")
        for row in report["summary"]:
            _print_row(row, report["summary"])
    report["hidden"] = _hidden(report["summary"])
    for row in report["hidden"]:
        print(
            f"{row['n_ranks']} ranks, the {row['n_overlapped_calls']} overlapped exchanges: "
            f"transfer exposed {1e3 * row['exposed_off_s']:.1f} ms/step without overlap, "
            f"{1e3 * row['exposed_on_s']:.1f} ms with it: "
            f"{100 * row['hidden_fraction']:.1f}% hidden; total wait incl. imbalance "
            f"{1e3 * row['exchange_off_s']:.1f} -> {1e3 * row['exchange_on_s']:.1f} ms/step "
            "(mean over ranks)"
        )
    (args.out / "bench_scaling.json").write_text(json.dumps(report, indent=2))
    _plot(report, args.out / "bench_scaling.png")
    print(f"wrote {args.out / 'bench_scaling.json'} and bench_scaling.png")
    return report


def _runs(ranks: list[int], overlap: str) -> list[tuple[int, str]]:
    """(rank count, overlap) of each run of a round; one rank has no exchange to overlap."""
    out = []
    for n in ranks:
        if n == 1:
            out.append((1, "-"))
        else:
            out += [(n, o) for o in (("on", "off") if overlap == "both" else (overlap,))]
    return out


def _hidden(summary: list[dict]) -> list[dict]:
    """Per rank count run both ways, over the exchange calls that overlap: the transfer's
    exposed part per step (per call the smallest wait over ranks, median over rounds)
    without and with overlap, and the hidden share; beside it the total wait per step
    (mean over ranks), which also holds the load imbalance."""
    out = []
    for n in sorted({row["n_ranks"] for row in summary}):
        rows = {row["overlap"]: row for row in summary if row["n_ranks"] == n}
        if "on" not in rows or "off" not in rows:
            continue
        on, off = rows["on"], rows["off"]
        calls = [
            c for c, ov in enumerate(on["call_overlapped"]) if ov and c < len(off["call_exposed_s"])
        ]
        exposed_on = sum(on["call_exposed_s"][c] for c in calls)
        exposed_off = sum(off["call_exposed_s"][c] for c in calls)
        wait_on = sum(on["exchange_s_per_rank"]) / len(on["exchange_s_per_rank"])
        wait_off = sum(off["exchange_s_per_rank"]) / len(off["exchange_s_per_rank"])
        out.append(
            {
                "n_ranks": n,
                "n_overlapped_calls": len(calls),
                "exposed_off_s": exposed_off,
                "exposed_on_s": exposed_on,
                "hidden_fraction": 1.0 - exposed_on / exposed_off if exposed_off > 0 else 0.0,
                "exchange_off_s": wait_off,
                "exchange_on_s": wait_on,
                "step_off_s": off["step_s"],
                "step_on_s": on["step_s"],
            }
        )
    return out


def _world(n: int, overlap: str, round_: int, per_rank: list[dict]) -> dict:
    """One run of ``n`` ranks: the slowest rank's step, CPU over ranks, exchange shares.

    ``max_exchange_fraction`` includes waiting for the slower rank (what the step pays);
    ``min_exchange_fraction`` is that of the rank that waited least, closer to the cost of
    the communication itself."""
    fractions = [r["profile"]["exchange_fraction"] for r in per_rank]
    return {
        "n_ranks": n,
        "overlap": overlap,
        "round": round_,
        "step_s": max(r["step_s"] for r in per_rank),
        "exchange_s_per_rank": [r["profile"]["exchange_s"] for r in per_rank],
        # per exchange call, the smallest wait over ranks: the transfer's exposed part
        "call_exposed_s": [
            min(waits)
            for waits in zip(*([c["wait_s"] for c in r["profile"]["calls"]] for r in per_rank))
        ],
        "call_overlapped": [c["overlapped"] for c in per_rank[0]["profile"]["calls"]],
        "cpu_s_all_ranks": sum(r["cpu_s"] for r in per_rank),
        "max_exchange_fraction": max(fractions),
        "min_exchange_fraction": min(fractions),
        "max_peak_rss_mib": max(r["peak_rss_mib"] for r in per_rank),
        "per_rank": per_rank,
    }


def _efficiency(row: dict, worlds: list[dict]) -> tuple[float, float]:
    """Wall and CPU efficiency of ``row`` against the first 1-rank row of ``worlds`` (or the
    smallest world's), ``t1 / (n tn)`` and ``cpu1 / sum(cpu)``."""
    base = min(worlds, key=lambda w: (w["n_ranks"], w.get("round", 0)))
    t1 = base["step_s"] * base["n_ranks"]
    return t1 / (row["n_ranks"] * row["step_s"]), base["cpu_s_all_ranks"] / row["cpu_s_all_ranks"]


def _print_row(row: dict, worlds: list[dict]) -> None:
    eff, cpu_eff = _efficiency(row, worlds)
    row["efficiency"], row["cpu_efficiency"] = eff, cpu_eff
    print(
        f"{row['n_ranks']:>5} {row['overlap']:>7} {row['step_s']:>8.3f} {100 * eff:>5.1f}% "
        f"{row['cpu_s_all_ranks']:>8.3f} {100 * cpu_eff:>7.1f}% "
        f"{100 * row['max_exchange_fraction']:>6.2f}% {100 * row['min_exchange_fraction']:>9.2f}% "
        f"{row['max_peak_rss_mib']:>12.0f}"
    )


def _summary(worlds: list[dict], runs: list[tuple[int, str]]) -> list[dict]:
    """Per run (rank count, overlap), the median over rounds of every figure (efficiencies
    recomputed)."""
    out = []
    for n, overlap in runs:
        rows = [w for w in worlds if w["n_ranks"] == n and w["overlap"] == overlap]
        keys = (
            "step_s",
            "cpu_s_all_ranks",
            "max_exchange_fraction",
            "min_exchange_fraction",
            "max_peak_rss_mib",
        )
        columns = zip(*(w["exchange_s_per_rank"] for w in rows))
        per_rank = [statistics.median(col) for col in columns]
        exposed = [statistics.median(col) for col in zip(*(w["call_exposed_s"] for w in rows))]
        out.append(
            {
                "n_ranks": n,
                "overlap": overlap,
                "rounds": len(rows),
                **{k: statistics.median(w[k] for w in rows) for k in keys},
                "exchange_s_per_rank": per_rank,
                "call_exposed_s": exposed,
                "call_overlapped": rows[0]["call_overlapped"],
            }
        )
    for row in out:
        row["efficiency"], row["cpu_efficiency"] = _efficiency(row, out)
    return out


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, compute, exchange = [], [], []
    for world in report["worlds"]:
        for r in world["per_rank"]:
            again = f" #{world['round'] + 1}" if report.get("rounds", 1) > 1 else ""
            how = "" if world["overlap"] == "-" else f"/ov {world['overlap']}"
            labels.append(f"{world['n_ranks']}r{how}/rank{r['rank']}{again}")
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
