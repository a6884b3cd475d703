"""Energy+forces(+stress) step time and peak memory: atomshard vs sevenn, same weights.

For each α-quartz supercell (default 2x2x2 = 72 and 4x4x4 = 576 atoms) and each
implementation, a fresh worker process loads the model, builds the structure (rattled
0.01 Å), runs ``--warmup`` steps and then ``--steps`` timed steps. A step is what an MD
step costs: neighbour list + energy + forces + stress (sevenn's calculator always
computes stress, so ours does too). Reported: median and spread (min, max) of the step
time, atom·steps/s, and the worker's peak RSS (``ru_maxrss``) and RSS before the first
step. Both implementations run with the same process settings
(:func:`atomshard.utils.process.configure_process`: no mmap churn, the OpenMP runtime's
default waits; ``--threads`` torch threads), i.e. sevenn at its best glibc setting (runs
before 2026-12-07 had passive OpenMP waits in both); the ``-tcmalloc``
implementations run the same worker with gperftools' tcmalloc preloaded (``LD_PRELOAD``,
as ``atomshard --allocator tcmalloc`` does), which sevenn gains from (they are in the
default list only where tcmalloc is installed).

Models: ``sevennet-0`` (our converted SevenNet-0 vs sevenn's calculator), or
``si-config`` (random-init 32 channels, 4 layers, l_max 3, 4 Å; ours only).

Writes ``<out>/bench_potential.json`` and ``<out>/bench_potential.png``.

    python benchmarks/bench_potential.py --out bench_out/potential --rounds 3
    python benchmarks/bench_potential.py --smoke --out /tmp/bpot
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

IMPLS = (
    "atomshard", "atomshard-lowmem", "atomshard-e3nn", "atomshard-tcmalloc",
    "sevenn", "sevenn-tcmalloc", "sevenn-shipped",
)  # fmt: skip
#: environment variables a worker must not inherit when running "as shipped"
_TUNING_ENV = ("OMP_WAIT_POLICY", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


def _worker(
    impl: str,
    model_name: str,
    repeat: int,
    steps: int,
    warmup: int,
    threads: int,
    chunk_edges: int | None = None,
    recompute: bool = False,
):
    if impl == "sevenn-shipped":
        import torch

        torch.set_num_threads(threads)
    else:
        from atomshard.utils.process import configure_process

        configure_process(threads)  # before torch starts its OpenMP runtime

    import torch

    from atomshard.io.structures import builtin_structure

    atoms = builtin_structure("quartz", (repeat, repeat, repeat))
    atoms.rattle(0.01, seed=0)
    if impl.startswith("atomshard"):
        from atomshard.graph import AtomicGraph
        from atomshard.models import compute_properties

        if model_name == "sevennet-0":
            from atomshard.models.resolve import resolve_model

            model = resolve_model("sevennet-0")
        else:
            from atomshard.models.potential import NequIPPotential, preset

            torch.manual_seed(0)
            model = NequIPPotential.from_config(
                preset("si-config", species=(8, 14), avg_num_neighbors=30.0)
            ).eval()
        kind = "e3nn" if impl == "atomshard-e3nn" else "fused"
        if impl == "atomshard-lowmem":  # recompute chunks of 4096 edges in the backward
            model.set_convolution(kind, chunk_edges=chunk_edges or 4096, recompute=True)
        else:
            model.set_convolution(kind, chunk_edges=chunk_edges, recompute=recompute or "auto")

        def step() -> float:
            graph = AtomicGraph.from_ase(atoms, model.cutoff)
            return float(compute_properties(model, graph, forces=True, stress=True).energy)

        config = getattr(model, "config", None)
        described = None if config is None else f"{config.n_layers} layers, l_max {config.l_max}"
        described = f"{described}, {kind} convolution"
    else:
        import warnings

        if model_name != "sevennet-0":
            raise SystemExit("sevenn is only benchmarked with SevenNet-0 weights")
        warnings.simplefilter("ignore")
        from sevenn.calculator import SevenNetCalculator

        calc = SevenNetCalculator("7net-0", device="cpu")

        def step() -> float:
            calc.calculate(atoms, ["energy", "forces", "stress"])
            return float(calc.results["energy"])

        described = "sevenn SevenNetCalculator (float32)"
    from _timing import time_steps  # this folder is sys.path[0] in a worker

    return {
        "impl": impl,
        "model": model_name,
        "model_description": described,
        "repeat": repeat,
        "threads": torch.get_num_threads(),
        **time_steps(step, len(atoms), steps, warmup),
    }


def _run_worker(args, impl: str, repeat: int) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", impl, "--model", args.model,
        "--repeats", str(repeat), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--threads", str(args.threads),
    ]  # fmt: skip
    if args.chunk_edges is not None:
        cmd += ["--chunk-edges", str(args.chunk_edges)]
    if args.recompute:
        cmd.append("--recompute")
    env = {k: v for k, v in os.environ.items() if k not in _TUNING_ENV}
    if impl == "sevenn":
        env["MALLOC_MMAP_MAX_"] = "0"
    if impl.endswith("-tcmalloc"):
        from atomshard.utils.process import find_allocator

        lib = find_allocator("tcmalloc")
        if lib is None:
            raise SystemExit(f"{impl}: tcmalloc is not installed (libtcmalloc-minimal4)")
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{impl} worker failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _pool(results: list[dict]) -> dict:
    """One row per (impl, size) from its rounds: times pooled, worst peak RSS."""
    times = [t for r in results for t in r["times_s"]]
    cpu_times = [t for r in results for t in r["cpu_times_s"]]
    row = dict(results[0])
    row.update(
        times_s=times,
        cpu_times_s=cpu_times,
        median_cpu_s=statistics.median(cpu_times),
        median_s=statistics.median(times),
        min_s=min(times),
        max_s=max(times),
        atom_steps_per_s=row["n_atoms"] / statistics.median(times),
        peak_rss_mb=max(r["peak_rss_mb"] for r in results),
        rounds=len(results),
    )
    return row


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    sizes = sorted({r["n_atoms"] for r in runs})
    impls = [i for i in IMPLS if any(r["impl"] == i for r in runs)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / max(len(impls), 1)
    for k, impl in enumerate(impls):
        rows = {r["n_atoms"]: r for r in runs if r["impl"] == impl}
        xs = [i + k * width for i, n in enumerate(sizes) if n in rows]
        med = [rows[n]["median_s"] for n in sizes if n in rows]
        err = [
            [rows[n]["median_s"] - rows[n]["min_s"] for n in sizes if n in rows],
            [rows[n]["max_s"] - rows[n]["median_s"] for n in sizes if n in rows],
        ]
        axes[0].bar(xs, med, width, yerr=err, label=impl, capsize=3)
        axes[1].bar(xs, [rows[n]["peak_rss_mb"] for n in sizes if n in rows], width, label=impl)
    for ax, label in zip(axes, ("step time (s), median, min–max", "peak RSS (MB)")):
        ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(sizes))])
        ax.set_xticklabels([f"{n} atoms" for n in sizes])
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"{report['model']} on α-quartz, {report['threads']} threads, {report['cpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/potential"))
    parser.add_argument("--model", choices=["sevennet-0", "si-config"], default="sevennet-0")
    parser.add_argument("--repeat", type=int, nargs="+", default=[2, 4], help="n for n×n×n cells")
    parser.add_argument(
        "--impls", nargs="+", choices=IMPLS, default=None, help="default: all (-tcmalloc: if found)"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1800.0, help="per worker, seconds")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--chunk-edges", type=int, default=None, help="ours: edges per chunk")
    parser.add_argument("--recompute", action="store_true", help="ours: recompute chunks")
    parser.add_argument("--smoke", action="store_true", help="9 atoms, si-config, ours only")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = _worker(
            args.worker,
            args.model,
            args.repeats,
            args.steps,
            args.warmup,
            args.threads,
            args.chunk_edges,
            args.recompute,
        )
        print(json.dumps(result))
        return result
    if args.impls is None:
        from atomshard.utils.process import find_allocator

        tcmalloc = find_allocator("tcmalloc") is not None
        args.impls = [i for i in IMPLS if tcmalloc or not i.endswith("-tcmalloc")]
    if args.smoke:
        args.model, args.repeat, args.impls = "si-config", [1], ["atomshard"]
        args.steps, args.warmup, args.rounds = 2, 1, 1
    if args.model != "sevennet-0":
        args.impls = [i for i in args.impls if not i.startswith("sevenn")]
    import torch

    report: dict = {
        "benchmark": "potential step (neighbour list + energy + forces + stress)",
        "model": args.model,
        "structure": "alpha-quartz, rattled 0.01 Å",
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "chunk_edges": args.chunk_edges,
        "recompute": args.recompute,
        "cpu": platform.processor() or platform.machine(),
        "device": "cpu",
        "world_size": 1,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "runs": [],
    }
    try:
        import sevenn

        report["versions"]["sevenn"] = sevenn.__version__
    except ImportError:
        pass
    print(f"{'impl':15s} {'atoms':>6s} {'median s':>9s} {'min s':>8s} {'max s':>8s} "
          f"{'atom·steps/s':>13s} {'peak RSS MB':>12s} {'time / ours':>12s} {'cpu s':>7s} "
          f"{'cpu / ours':>10s}")  # fmt: skip
    for repeat in args.repeat:
        rounds: list[dict[str, dict]] = []
        for _ in range(args.rounds):  # interleaved: every impl once per round
            rounds.append({impl: _run_worker(args, impl, repeat) for impl in args.impls})
        for impl in args.impls:
            r = _pool([rnd[impl] for rnd in rounds])
            if "atomshard" in args.impls:
                ratios = [rnd[impl]["median_s"] / rnd["atomshard"]["median_s"] for rnd in rounds]
                r["time_ratio_to_atomshard_per_round"] = ratios
                r["time_ratio_to_atomshard"] = statistics.median(ratios)
                cpu = [
                    rnd[impl]["median_cpu_s"] / rnd["atomshard"]["median_cpu_s"] for rnd in rounds
                ]
                r["cpu_time_ratio_to_atomshard"] = statistics.median(cpu)
            report["runs"].append(r)
            ratio = r.get("time_ratio_to_atomshard", float("nan"))
            cpu_ratio = r.get("cpu_time_ratio_to_atomshard", float("nan"))
            print(
                f"{impl:15s} {r['n_atoms']:6d} {r['median_s']:9.3f} {r['min_s']:8.3f} "
                f"{r['max_s']:8.3f} {r['atom_steps_per_s']:13.1f} {r['peak_rss_mb']:12.0f} "
                f"{ratio:12.2f} {r['median_cpu_s']:7.2f} {cpu_ratio:10.2f}",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_potential.json").write_text(json.dumps(report, indent=2))
    _plot(report, args.out / "bench_potential.png")
    print(f"wrote {args.out / 'bench_potential.json'} and {args.out / 'bench_potential.png'}")
    return report


if __name__ == "__main__":
    main()
