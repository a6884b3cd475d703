"""FIRE (or CG) minimisation speed: SevenNet-0 on random-packed amorphous HfO2.

Runs the one MD driver (``atomshard minimize``'s code path) serially and records every
iteration's energy and largest force; prints iterations to convergence, wall time and
time per iteration; writes ``bench_minimize.json`` and ``bench_minimize.png`` (fmax and
energy against iteration) into ``--out``.

    python benchmarks/bench_minimize.py --formula-units 1000 --fmax 0.05   # 3,000 atoms
    python benchmarks/bench_minimize.py --smoke                          # 2 iterations
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sevennet-0")
    parser.add_argument("--formula-units", type=int, default=1000, help="HfO2 units (3 atoms)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random packing")
    parser.add_argument("--ensemble", choices=["fire", "cg"], default="fire")
    parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--cell", choices=["none", "iso", "aniso", "tri"], default="none")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="bench-out/minimize")
    parser.add_argument("--smoke", action="store_true", help="8 units, 2 iterations")
    args = parser.parse_args(argv)

    from atomshard.io.amorphous import amorphous_hfo2
    from atomshard.md import MDConfig, Observer, run_md
    from atomshard.models.resolve import resolve_model
    from atomshard.utils.process import configure_process

    configure_process(args.threads)
    units = 8 if args.smoke else args.formula_units
    steps = 2 if args.smoke else args.max_steps
    atoms = amorphous_hfo2(units, seed=args.seed)
    t0 = time.perf_counter()
    dtype = None if args.dtype is None else getattr(torch, args.dtype)
    model = resolve_model(args.model, dtype=dtype)
    load_s = time.perf_counter() - t0
    config = MDConfig(
        structure="a-hfo2",
        model=args.model,
        ensemble=args.ensemble,
        steps=steps,
        fmax=args.fmax,
        min_cell=args.cell,
        dtype=args.dtype,
        device=args.device,
        traj_every=0,
        log_every=0,
        restart_every=0,
        output=None,
    )
    history: dict[str, list[float]] = {"iteration": [], "energy_eV": [], "fmax": []}

    def record(state) -> None:
        history["iteration"].append(state.step)
        history["energy_eV"].append(state.energy)
        history["fmax"].append(float(state.thermostat["fmax"][0]))

    t0 = time.perf_counter()
    result = run_md(
        config, model=model, atoms=atoms, observers=[Observer(record, every=1)], progress=False
    )
    total_s = time.perf_counter() - t0
    assert result is not None
    iterations = history["iteration"][-1] if history["iteration"] else 0
    report = {
        "benchmark": "minimize",
        "model": args.model,
        "dtype": args.dtype or "model default",
        "ensemble": args.ensemble,
        "cell": args.cell,
        "structure": f"amorphous HfO2 (atomshard.io.amorphous_hfo2, seed {args.seed})",
        "n_atoms": len(atoms),
        "fmax_target": args.fmax,
        "max_steps": steps,
        "converged": bool(result.converged),
        "iterations": iterations,
        "final_fmax": history["fmax"][-1] if history["fmax"] else None,
        "initial_fmax": history["fmax"][0] if history["fmax"] else None,
        "final_energy_eV": result.final_energy,
        "energy_change_eV_per_atom": (
            (history["energy_eV"][-1] - history["energy_eV"][0]) / len(atoms)
            if history["energy_eV"]
            else None
        ),
        "loop_seconds": result.wall_seconds,
        "seconds_per_iteration": result.wall_seconds / max(iterations, 1),
        "total_seconds_with_first_forces": total_s,
        "model_load_seconds": load_s,
        "neighbor_builds": result.neighbor_builds,
        "n_ranks": 1,
        "threads": torch.get_num_threads(),
        "device": args.device if args.device != "cpu" else (platform.processor() or "cpu"),
        "versions": {"torch": str(torch.__version__), "python": platform.python_version()},
        "history": history,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_minimize.json").write_text(json.dumps(report, indent=2))
    _plot(report, out / "bench_minimize.png")
    for key, value in report.items():
        if key not in ("versions", "history"):
            print(f"{key:>32}: {value}")
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = report["history"]
    it = np.asarray(h["iteration"])
    fig, (ax_f, ax_e) = plt.subplots(2, 1, figsize=(6.5, 5.5), sharex=True)
    ax_f.semilogy(it, h["fmax"])
    ax_f.axhline(report["fmax_target"], color="grey", ls="--", label="fmax target")
    ax_f.set_ylabel("largest force [eV/Å]")
    ax_f.legend(loc="best")
    energy = np.asarray(h["energy_eV"])
    ax_e.plot(it, (energy - energy[-1]) / report["n_atoms"] * 1e3 if len(energy) else energy)
    ax_e.set_ylabel("E − E_final [meV/atom]")
    ax_e.set_xlabel("iteration")
    state = "converged" if report["converged"] else "not converged"
    fig.suptitle(
        f"{report['ensemble'].upper()} {report['model']}, {report['n_atoms']} atoms a-HfO2: "
        f"{report['iterations']} iterations, {report['loop_seconds']:.0f} s ({state})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
