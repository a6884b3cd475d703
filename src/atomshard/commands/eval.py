"""``atomshard eval``: single-point energy, per-atom energies, forces, stress per frame."""

from __future__ import annotations

import argparse
import io
import math
import time

from atomshard.commands._common import (
    add_model_arguments,
    add_repeat_argument,
    check_device,
    parse_repeat,
)
from atomshard.units import EV_PER_A3_TO_GPA
from atomshard.utils.dtypes import parse_dtype


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--structure",
        required=True,
        help="any ASE-readable file (all frames), an n2p2 input.data, or a "
        "built-in name (quartz, si, hfo2, water)",
    )
    parser.add_argument(
        "--format",
        default=None,
        help="file format for ASE (or 'n2p2'); guessed from the name by default",
    )
    parser.add_argument("--index", default=":", help="frames to read, ASE syntax (default ':')")
    add_repeat_argument(parser, help="supercell of every frame, e.g. 2x2x2")
    parser.add_argument(
        "--output",
        "-o",
        default=None,
        help="write results as extxyz (energy, stress in info; forces, energies arrays)",
    )
    parser.add_argument(
        "--block-atoms",
        default="auto",
        help="the most atoms (halo included) one evaluation holds at once; larger systems "
        "are evaluated exactly, block by block: a number, 'auto' (default: from the free "
        "memory) or 'off'",
    )
    from atomshard.commands._parallel import add_parallel_arguments

    add_parallel_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from atomshard.io import read_structures
    from atomshard.utils.process import configure_process

    configure_process(args.threads)
    check_device(args.device)
    frames = read_structures(
        args.structure, index=args.index, format=args.format, repeat=parse_repeat(args.repeat)
    )
    from atomshard.commands._parallel import parallel_requested

    if parallel_requested(args):
        return _run_parallel(args, frames)
    from atomshard.md.calculator import AtomshardCalculator

    blocks = None if args.block_atoms == "off" else args.block_atoms
    calc = AtomshardCalculator(
        args.model,
        device=args.device,
        dtype=parse_dtype(args.dtype, what="--dtype"),
        block_atoms=blocks,
    )
    results = []
    t0 = time.perf_counter()
    for f, atoms in enumerate(frames):
        reference = _reference(atoms)
        atoms.calc = calc
        periodic = bool(atoms.pbc.all())
        props = ["energy", "forces"] + (["stress"] if periodic else [])
        name = args.structure if len(frames) == 1 else f"{args.structure}, frame {f}"
        calc.model.check_species(__import__("torch").as_tensor(atoms.numbers), name=name)
        calc.calculate(atoms, props)
        results.append((atoms, dict(calc.results), reference))
    wall = time.perf_counter() - t0
    _print_table(results, wall)
    if args.output:
        _write(args.output, results)
        print(f"wrote {len(results)} frame(s) to {args.output}")
    return 0


def _run_parallel(args: argparse.Namespace, frames) -> int:
    """The graph-parallel path: ``--ranks N`` local processes, or torchrun/srun ranks."""
    from atomshard.runtime import evaluate_distributed, format_profile, frame_result_dict

    references = [_reference(atoms) for atoms in frames]
    out = evaluate_distributed(
        args.model,
        frames,
        args.ranks,
        partition=args.partition,
        transport=args.transport,
        dtype=parse_dtype(args.dtype, what="--dtype"),
        profile_path=args.profile,
        max_atoms=None if args.block_atoms == "off" else args.block_atoms,
    )
    if out is None:  # not rank 0 of a torchrun job
        return 0
    if args.profile is not None:
        print(format_profile(out["profile"]))
        print(f"wrote per-rank timings to {args.profile}")
    results = list(zip(frames, [frame_result_dict(r) for r in out["frames"]], references))
    _print_table(results, out["seconds"])
    if args.output:
        _write(args.output, results)
        print(f"wrote {len(results)} frame(s) to {args.output}")
    return 0


def _reference(atoms) -> dict:
    """Energy/forces that came with the input (e.g. DFT labels), if any."""
    ref: dict = {}
    if atoms.calc is not None:
        for key in ("energy", "forces"):
            try:
                ref[key] = atoms.calc.get_property(key, atoms, allow_calculation=False)
            except Exception:  # a reader's calculator may lack the property entirely
                continue
            if ref[key] is None:
                del ref[key]
    return ref


def _print_table(results, wall: float) -> None:
    import numpy as np

    has_ref = any("energy" in r for _, _, r in results)
    head = (
        f"{'frame':>5} {'formula':<14} {'atoms':>6} {'energy [eV]':>16} {'eV/atom':>11} "
        f"{'max|F| [eV/Å]':>14} {'P [GPa]':>9}"
    )
    if has_ref:
        head += f" {'dE/atom [meV]':>14} {'F RMSE [meV/Å]':>15}"
    print(head)
    for f, (atoms, res, ref) in enumerate(results):
        n = len(atoms)
        fmax = float(np.abs(res["forces"]).max()) if n else 0.0
        p = -float(np.mean(res["stress"][:3])) * EV_PER_A3_TO_GPA if "stress" in res else math.nan
        line = (
            f"{f:>5} {atoms.get_chemical_formula():<14} {n:>6} {res['energy']:>16.6f} "
            f"{res['energy'] / n:>11.6f} {fmax:>14.4f} {p:>9.3f}"
        )
        if has_ref:
            de = (res["energy"] - ref["energy"]) / n * 1e3 if "energy" in ref else math.nan
            fr = (
                float(np.sqrt(np.mean((res["forces"] - ref["forces"]) ** 2))) * 1e3
                if "forces" in ref
                else math.nan
            )
            line += f" {de:>14.3f} {fr:>15.3f}"
        print(line)
    total_atoms = sum(len(a) for a, _, _ in results)
    print(f"{len(results)} frame(s), {total_atoms} atoms in {wall:.2f} s")


def _write(path: str, results) -> None:
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from atomshard.utils.files import atomic_write

    buffer = io.StringIO()
    for atoms, res, _ in results:
        out = atoms.copy()
        out.calc = None
        # ASE writes calculator results as extxyz columns/keys: energies and forces become
        # per-atom columns, energy and stress go into the comment line.
        spc = {k: res[k] for k in ("energy", "energies", "forces", "stress") if k in res}
        out.calc = SinglePointCalculator(out, **spc)
        ase.io.write(buffer, out, format="extxyz")
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())
