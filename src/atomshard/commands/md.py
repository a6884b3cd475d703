"""``atomshard md``: molecular dynamics from a YAML config and/or flags.

The argument groups and the config/launch helpers here are shared with
``atomshard minimize`` (:mod:`atomshard.commands.minimize`), which runs the same driver.
"""

from __future__ import annotations

import argparse
from typing import Any

from atomshard.commands._common import check_device, parse_repeat


def add_system_arguments(parser: argparse.ArgumentParser) -> None:
    """The YAML config, structure, supercell and model (``md`` and ``minimize``)."""
    parser.add_argument(
        "config", nargs="?", default=None, help="YAML file with MDConfig fields; flags override it"
    )
    parser.add_argument("--structure", help="structure file or built-in name (default: quartz)")
    parser.add_argument("--repeat", help="supercell, e.g. 2x2x2 (default: 1)")
    parser.add_argument("--model", help="checkpoint, sevennet-0 (default) or n2p2:FOLDER")


def add_run_arguments(parser: argparse.ArgumentParser, *, output: str = "atomshard-md") -> None:
    """Neighbour list, outputs, dtype, device, memory, resume and ranks (``md``, ``minimize``)."""
    parser.add_argument("--skin", type=float, help="neighbour-list skin, Å (default: 1.0)")
    parser.add_argument("--traj-every", type=int, help="trajectory interval (default: 10)")
    parser.add_argument("--log-every", type=int, help="thermo log interval (default: 1)")
    parser.add_argument("--restart-every", type=int, help="restart interval (default: 50)")
    parser.add_argument("--output", "-o", help=f"output folder (default: {output})")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="network body dtype")
    parser.add_argument("--device", help="torch device (default: cpu)")
    parser.add_argument(
        "--block-atoms",
        type=_block_atoms,
        help="the most atoms (halo included) one force evaluation holds at once; larger "
        "systems are evaluated exactly, block by block: a number, 'auto' (default) or 'off'",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --output from its restart file"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from atomshard.commands._parallel import add_parallel_arguments

    add_parallel_arguments(parser, profile=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_system_arguments(parser)
    parser.add_argument(
        "--ensemble",
        choices=["nve", "langevin", "nose-hoover", "nvt", "npt", "fire", "cg"],
        help="default: langevin ('nvt' means langevin; npt: MTK barostat with Nosé–Hoover "
        "chains; fire and cg minimise, see 'atomshard minimize')",
    )
    parser.add_argument("--steps", type=int, help="total steps (default: 100)")
    parser.add_argument("--dt", type=float, help="timestep in fs (default: 1.0)")
    parser.add_argument("--temperature", type=float, help="K (default: 300)")
    parser.add_argument(
        "--init-temperature",
        type=float,
        help="initial velocity temperature, K (default: --temperature)",
    )
    parser.add_argument("--friction", type=float, help="Langevin friction, 1/fs (default 0.02)")
    parser.add_argument("--tdamp", type=float, help="Nosé–Hoover damping time, fs (default 100)")
    parser.add_argument("--pressure", type=float, help="npt target pressure, GPa (default 0)")
    parser.add_argument("--pdamp", type=float, help="npt barostat damping time, fs (default 1000)")
    parser.add_argument(
        "--barostat",
        choices=["iso", "aniso", "tri"],
        help="npt cell motion: iso (volume), aniso (three axes), tri (fully flexible); default iso",
    )
    parser.add_argument("--seed", type=int, help="random seed (default: 0)")
    parser.add_argument(
        "--zero-momentum",
        type=int,
        metavar="N",
        help="remove the centre-of-mass momentum every N steps (and the angular momentum "
        "of a system periodic along no axis); default 0: never",
    )
    add_run_arguments(parser)


def _block_atoms(text: str) -> int | str:
    """``--block-atoms``: a whole number stays a number (MDConfig checks its range)."""
    return int(text) if text.strip().lstrip("-").isdigit() else text.strip().lower()


def config_from_args(args: argparse.Namespace, **overrides: Any) -> Any:
    """The :class:`~atomshard.md.MDConfig` of the shared flags, ``overrides`` replacing them.

    Values left at None keep the YAML file's value, or the field's default.
    """
    from atomshard.md import MDConfig

    values = dict(
        structure=args.structure,
        model=args.model,
        skin=args.skin,
        traj_every=args.traj_every,
        log_every=args.log_every,
        restart_every=args.restart_every,
        output=args.output,
        dtype=args.dtype,
        device=args.device,
        block_atoms=args.block_atoms,
        repeat=parse_repeat(args.repeat) if args.repeat else None,
    )
    values.update(overrides)
    if args.config:
        config = MDConfig.from_yaml(args.config, **values)
    else:
        config = MDConfig(**{k: v for k, v in values.items() if v is not None})
    check_device(config.device)
    return config


def launch(args: argparse.Namespace, config: Any) -> Any:
    """Run ``config`` on ``--ranks`` (or the torchrun/srun job); rank 0's result or None."""
    from atomshard.md import run_md_on_ranks

    return run_md_on_ranks(
        config,
        args.ranks,
        partition=args.partition,
        transport=args.transport,
        resume=args.resume,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    from atomshard.utils.process import configure_process

    configure_process(args.threads)
    ensemble = "langevin" if args.ensemble == "nvt" else args.ensemble
    config = config_from_args(
        args,
        ensemble=ensemble,
        steps=args.steps,
        dt=args.dt,
        temperature=args.temperature,
        init_temperature=args.init_temperature,
        friction=args.friction,
        tdamp=args.tdamp,
        pressure=args.pressure,
        pdamp=args.pdamp,
        barostat=args.barostat,
        seed=args.seed,
        zero_momentum=args.zero_momentum,
    )
    result = launch(args, config)
    if result is None:  # not rank 0 of a torchrun job
        return 0
    if result.converged is not None:  # a minimiser (--ensemble fire or cg)
        from atomshard.commands.minimize import report

        return report(result, config)
    if result.n_ranks > 1:
        print(f"{result.n_migrated} atom migrations between ranks at neighbour-list rebuilds")
    print(
        f"{result.steps} steps of {result.n_atoms} atoms in {result.wall_seconds:.1f} s: "
        f"{result.steps_per_second:.2f} steps/s, {result.ns_per_day:.3f} ns/day, "
        f"{result.neighbor_builds} neighbour-list builds; final T = "
        f"{result.final_temperature:.1f} K, E_pot = {result.final_energy:.4f} eV"
    )
    out = result.output
    print(f"outputs in {out}/: trajectory.extxyz, thermo.csv, thermo.png, restart.pt, config.yaml")
    if result.interrupted:
        print(
            f"stopped by SIGTERM after step {result.steps} of this session; the restart file "
            f"{out}/restart.pt is written: continue with --resume --output {out}"
        )
        return 128 + 15
    return 0
