"""``atomshard errors --model M --data FILE``: MAE/RMSE of a potential on a labelled dataset.

Prints a table of per-atom-energy, force and stress errors (meV units); ``--json``
writes them, ``--parity`` a PNG of predicted vs reference values. ``atomshard evaluate``
is the deprecated old name of this command (one release), as ``--float64`` is of
``--dtype float64``.
"""

from __future__ import annotations

import argparse

from atomshard.commands._common import add_dtype_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", required=True, help="checkpoint, sevennet-0, ...")
    parser.add_argument("--data", "-d", required=True, help="labelled dataset file")
    parser.add_argument("--format", default=None, help="force a reader (extxyz, db, n2p2, ...)")
    parser.add_argument("--length-unit", default=None, help="n2p2 files: bohr, angstrom, ...")
    parser.add_argument("--energy-unit", default=None, help="n2p2 files: hartree, ev, ...")
    parser.add_argument("--batch-size", type=int, default=8, help="structures per batch")
    add_dtype_argument(parser, float64_alias=True)
    parser.add_argument("--json", default=None, help="write the errors to this JSON file")
    parser.add_argument("--parity", default=None, help="write a parity plot (PNG)")


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from atomshard.errors import InputError
    from atomshard.models.base import Potential
    from atomshard.models.resolve import resolve_model
    from atomshard.train.data import read_dataset
    from atomshard.train.evaluate import error_table, evaluate_model
    from atomshard.utils.dtypes import parse_dtype
    from atomshard.utils.files import atomic_write

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    model = resolve_model(args.model, dtype=parse_dtype(args.dtype, what="--dtype"))
    if not isinstance(model, Potential):
        raise InputError(f"{args.model}: not an interatomic potential")
    samples = read_dataset(
        args.data, format=args.format, length_unit=args.length_unit, energy_unit=args.energy_unit
    )
    for s in samples:
        model.check_species(torch.as_tensor(s.structure.species), name=s.source)
    ev = evaluate_model(model, samples, batch_size=args.batch_size)
    print(error_table(ev.errors, title=f"{args.model} on {args.data} ({len(samples)} frames)"))
    if args.json:
        with atomic_write(args.json) as fh:
            # an error over no frames (no energies, no stress) is left out, not NaN
            found = {k: v for k, v in ev.errors.items() if v == v}
            json.dump({"model": args.model, "data": args.data, "n_frames": len(samples),
                       **found}, fh, indent=1)  # fmt: skip
    if args.parity:
        from atomshard.train.report import plot_parity

        plot_parity(ev, args.parity, title=f"{args.model} on {args.data}")
    return 0
