"""``atomshard minimize``: relax positions (and the cell) with FIRE or CG.

The same driver, options and output folder as ``atomshard md`` (``md --ensemble fire|cg``
runs the same thing). Exit status 0 when the tolerances are met, 1 when ``--max-steps``
iterations did not reach them (the last state is in the restart file and the trajectory).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = "atomshard-minimize"
DEFAULT_MAX_STEPS = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from atomshard.commands.md import add_run_arguments, add_system_arguments

    add_system_arguments(parser)
    parser.add_argument(
        "--ensemble",
        choices=["fire", "cg"],
        help="minimiser: FIRE (default) or conjugate gradients (Polak-Ribière)",
    )
    parser.add_argument(
        "--fmax",
        type=float,
        help="converged when every force is below this, eV/Å (default 0.01); with --cell "
        "also every row of V|σ + P|/N, eV",
    )
    parser.add_argument(
        "--etol",
        type=float,
        help="also converged when the energy changes by less than this fraction in one "
        "iteration (default 0: off)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        help=f"most iterations in all (default {DEFAULT_MAX_STEPS}); not converged by then: "
        "exit status 1",
    )
    parser.add_argument(
        "--cell",
        choices=["none", "iso", "aniso", "tri"],
        help="also relax the cell: iso (volume), aniso (a, b, c lengths), tri (all six "
        "strains); default none",
    )
    parser.add_argument(
        "--pressure",
        type=float,
        help="target pressure of a cell relaxation, GPa (default 0): minimises E + PV",
    )
    parser.add_argument(
        "--dt",
        type=float,
        help="FIRE's first time step (it grows to 10 dt), fs; CG: time per iteration (default 1.0)",
    )
    add_run_arguments(parser, output=DEFAULT_OUTPUT)


def run(args: argparse.Namespace) -> int:
    from atomshard.commands.md import config_from_args, launch
    from atomshard.md.config import MINIMIZERS
    from atomshard.utils.process import configure_process

    configure_process(args.threads)
    fresh = not args.config  # a YAML file's values stand where no flag is given
    config = config_from_args(
        args,
        ensemble=args.ensemble,
        fmax=args.fmax,
        etol=args.etol,
        steps=args.max_steps if args.max_steps is not None or not fresh else DEFAULT_MAX_STEPS,
        min_cell=args.cell,
        pressure=args.pressure,
        dt=args.dt,
        output=args.output if args.output is not None or not fresh else DEFAULT_OUTPUT,
    )
    if config.ensemble not in MINIMIZERS:  # a YAML file of an MD run: minimise it with FIRE
        config = dataclasses.replace(config, ensemble="fire")
    result = launch(args, config)
    if result is None:  # not rank 0 of a torchrun job
        return 0
    return report(result, config)


def report(result: Any, config: Any) -> int:
    """Print the outcome of a minimisation; the exit status (0 converged, 1 not, 143 SIGTERM)."""
    out = result.output
    final = _final(Path(out)) if out is not None else None
    iterations = final["step"] if final else result.steps
    fmax = final["fmax"] if final else float("nan")
    volume = final["volume"] if final else float("nan")
    where = f"; last state in {out}/restart.pt and {out}/trajectory.extxyz" if out else ""
    if result.interrupted:
        print(
            f"stopped by SIGTERM after iteration {iterations}; the restart file is written: "
            f"continue with --resume --output {out}"
        )
        return 128 + 15
    if not result.converged:
        print(
            f"not converged in {iterations} iterations (--max-steps {config.steps}): "
            f"fmax = {fmax:.3g} > {config.fmax:g}{where}",
            file=sys.stderr,
        )
        return 1
    cell = f", volume {volume:.4f} Å³" if config.min_cell != "none" else ""
    print(
        f"converged in {iterations} iterations ({config.ensemble}, {result.n_atoms} atoms, "
        f"{result.wall_seconds:.1f} s): E = {result.final_energy:.6f} eV, "
        f"fmax = {fmax:.3g}{cell}; outputs in {out}/"
    )
    return 0


def _final(out: Path) -> dict[str, float] | None:
    """Iterations, fmax and volume of the restart file the run ended with."""
    import torch

    path = out / "restart.pt"
    if not path.exists():
        return None
    data = torch.load(path, map_location="cpu", weights_only=True)
    thermostat = data.get("thermostat", {})
    fmax = thermostat.get("fmax")
    return {
        "step": int(data["step"]),
        "fmax": float(fmax[0]) if fmax is not None else float("nan"),
        "volume": abs(float(torch.linalg.det(data["state"]["cell"]))),
    }
