"""NVE energy conservation and MD speed: SevenNet-0 on 72-atom α-quartz for 1 ps.

Prints the drift of the total energy (linear fit slope and maximum deviation, eV/atom),
steps/s and ns/day; writes JSON and a PNG of E_tot(t) into ``--output``.

    python benchmarks/bench_nve_drift.py --time-fs 1000 --dt 1.0
    python benchmarks/bench_nve_drift.py --smoke     # 5 steps, for the test suite
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
    parser.add_argument("--structure", default="quartz")
    parser.add_argument("--repeat", default="2x2x2")
    parser.add_argument("--time-fs", type=float, default=1000.0)
    parser.add_argument("--dt", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default="bench-out/nve-drift")
    parser.add_argument("--smoke", action="store_true", help="5 steps, checks the script runs")
    args = parser.parse_args(argv)

    from atomshard.commands import parse_repeat
    from atomshard.io import read_structures
    from atomshard.md import SerialForceField, maxwell_boltzmann, nve_init, nve_step
    from atomshard.md.state import state_from_ase
    from atomshard.models.resolve import resolve_model
    from atomshard.utils.process import configure_process

    configure_process(args.threads)
    n_steps = 5 if args.smoke else round(args.time_fs / args.dt)
    model = resolve_model(args.model, dtype=getattr(torch, args.dtype))
    atoms = read_structures(args.structure, repeat=parse_repeat(args.repeat))[0]
    state = state_from_ase(atoms)
    maxwell_boltzmann(state, args.temperature, seed=0)
    ff = SerialForceField(model, skin=1.0)  # type: ignore[arg-type]
    nve_init(state, ff)
    times, totals = [0.0], [state.energy + state.kinetic_energy()]
    start = time.perf_counter()
    for _ in range(n_steps):
        nve_step(state, ff, dt=args.dt)
        times.append(state.time)
        totals.append(state.energy + state.kinetic_energy())
    wall = time.perf_counter() - start
    e = (np.array(totals) - totals[0]) / state.n_atoms
    t = np.array(times)
    slope = float(np.polyfit(t, e, 1)[0]) if len(t) > 2 else 0.0
    result = {
        "benchmark": "nve_drift",
        "model": args.model,
        "dtype": args.dtype,
        "structure": args.structure,
        "repeat": args.repeat,
        "n_atoms": state.n_atoms,
        "dt_fs": args.dt,
        "steps": n_steps,
        "max_abs_deviation_eV_per_atom": float(np.abs(e).max()),
        "drift_eV_per_atom_per_ps": slope * 1000.0,
        "steps_per_second": n_steps / wall,
        "ns_per_day": n_steps / wall * args.dt * 86400e-6,
        "neighbor_builds": ff.n_builds,
        "threads": torch.get_num_threads(),
        "device": platform.processor() or platform.machine(),
        "versions": {"torch": str(torch.__version__), "python": platform.python_version()},
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "nve_drift.json").write_text(json.dumps(result, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(t, e * 1e3)
    ax.set_xlabel("time [fs]")
    ax.set_ylabel("E_tot − E_tot(0) [meV/atom]")
    ax.set_title(f"NVE {args.model} {args.dtype}, {state.n_atoms} atoms, dt={args.dt} fs")
    fig.tight_layout()
    fig.savefig(out / "nve_drift.png", dpi=110)
    plt.close(fig)
    for key, value in result.items():
        if key != "versions":
            print(f"{key:>32}: {value}")
    return result


if __name__ == "__main__":
    main()
