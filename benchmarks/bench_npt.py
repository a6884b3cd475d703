"""The cost of NPT over NVT, and NPT on 1 and 2 ranks: SevenNet-0 on α-quartz.

Runs the one MD driver (``atomshard.md.run_md_on_ranks``) with the Nosé–Hoover NVT
ensemble and the MTK NPT ensemble (same thermostat, plus the barostat) for each rank
count, in interleaved rounds, and reports the median steps/s of each, the NPT/NVT cost
ratio, and the density of every NPT run's last step. A run's rate is one over its median
step time (``MDResult.median_step_seconds``): the slow first steps of a process, where
kernels are built and caches filled, do not count. Writes ``bench_npt.json`` and
``bench_npt.png`` (steps/s per setting; volume against time of the NPT runs).

    python benchmarks/bench_npt.py --repeat 8x8x6 --steps 20 --ranks 1 2   # 4,608 atoms
    python benchmarks/bench_npt.py --repeat 2x2x2 --steps 2000 --ranks 1    # density, 2 ps
    python benchmarks/bench_npt.py --smoke                                  # for the tests
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sevennet-0")
    parser.add_argument("--structure", default="quartz")
    parser.add_argument("--repeat", default="2x2x2")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dt", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--pressure", type=float, default=1.0, help="GPa")
    parser.add_argument("--pdamp", type=float, default=1000.0)
    parser.add_argument("--barostat", default="iso", choices=["iso", "aniso", "tri"])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median)")
    parser.add_argument("--threads", type=int, default=None, help="threads per rank")
    parser.add_argument("--out", default="bench-out/npt")
    parser.add_argument("--smoke", action="store_true", help="3 steps, 1 round: runs at all")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeat, args.steps, args.rounds = "1x1x1", 3, 1

    from atomshard.commands import parse_repeat
    from atomshard.io import read_structures
    from atomshard.md import MDConfig, run_md_on_ranks
    from atomshard.md.outputs import read_thermo
    from atomshard.utils.process import configure_process

    configure_process(args.threads)
    atoms = read_structures(args.structure, repeat=parse_repeat(args.repeat))[0]
    mass = float(np.sum(atoms.get_masses()))  # amu
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ensembles = {"nvt": "nose-hoover", "npt": "npt"}
    rates: dict[str, list[float]] = {}
    density: dict[str, float] = {}
    volumes: dict[str, tuple[list[float], list[float]]] = {}
    n_atoms = 0
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for n_ranks in args.ranks:
                for name, ensemble in ensembles.items():
                    key = f"{name}-{n_ranks}"
                    folder = Path(scratch) / f"{key}-{round_}"
                    config = MDConfig(
                        structure=args.structure,
                        repeat=parse_repeat(args.repeat),
                        model=args.model,
                        ensemble=ensemble,
                        steps=args.steps,
                        dt=args.dt,
                        temperature=args.temperature,
                        pressure=args.pressure,
                        pdamp=args.pdamp,
                        barostat=args.barostat,
                        traj_every=0,
                        restart_every=0,
                        output=str(folder),
                    )
                    result = run_md_on_ranks(
                        config, n_ranks, progress=False, threads_per_rank=args.threads
                    )
                    assert result is not None
                    n_atoms = result.n_atoms
                    rate = 1.0 / result.median_step_seconds
                    rates.setdefault(key, []).append(rate)
                    if name == "npt":
                        thermo = read_thermo(folder / "thermo.csv")
                        volumes[key] = (list(thermo["time_fs"]), list(thermo["volume_A3"]))
                        density[key] = AMU_PER_A3_TO_G_PER_CM3 * mass / thermo["volume_A3"][-1]
                    print(f"round {round_}: {key:8s} {rate:8.3f} steps/s ({n_atoms} atoms)")
    median = {k: statistics.median(v) for k, v in rates.items()}
    cost = {
        n: median[f"nvt-{n}"] / median[f"npt-{n}"] - 1.0
        for n in args.ranks
        if median[f"npt-{n}"] > 0
    }
    report = {
        "benchmark": "bench_npt",
        "n_atoms": n_atoms,
        "model": args.model,
        "structure": args.structure,
        "repeat": args.repeat,
        "steps": args.steps,
        "dt_fs": args.dt,
        "pressure_GPa": args.pressure,
        "barostat": args.barostat,
        "rounds": args.rounds,
        "steps_per_second": median,
        "all_rounds": rates,
        "npt_cost_over_nvt": cost,
        "final_density_g_cm3": density,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    for n in args.ranks:
        print(
            f"{n} rank(s): NVT {median[f'nvt-{n}']:.3f}, NPT {median[f'npt-{n}']:.3f} steps/s; "
            f"NPT costs {100 * cost.get(n, float('nan')):+.1f} % over NVT; density after "
            f"{args.steps * args.dt:.0f} fs {density.get(f'npt-{n}', float('nan')):.4f} g/cm³"
        )
    (out / "bench_npt.json").write_text(json.dumps(report, indent=2))
    _plot(out / "bench_npt.png", median, volumes, report)
    return report


def _plot(path: Path, median: dict, volumes: dict, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_v) = plt.subplots(1, 2, figsize=(10, 4))
    keys = sorted(median)
    ax_r.bar(
        keys,
        [median[k] for k in keys],
        color=["tab:blue" if "nvt" in k else "tab:orange" for k in keys],
    )
    ax_r.set_ylabel("steps/s (median)")
    ax_r.set_title(f"{report['n_atoms']} atoms, {report['model']}")
    for key, (t, v) in sorted(volumes.items()):
        ax_v.plot(t, v, label=key)
    ax_v.set_xlabel("time [fs]")
    ax_v.set_ylabel("volume [Å³]")
    ax_v.set_title(f"NPT at {report['pressure_GPa']} GPa ({report['barostat']})")
    ax_v.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
