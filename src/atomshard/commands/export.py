"""``atomshard export MODEL -o FILE``: one self-contained file for ``pair_style atomshard``.

``MODEL`` is any ``--model`` string (a checkpoint, ``sevennet-0``, ``sevennet:NAME``,
``n2p2:FOLDER``, ``allegro:PATH``). The file holds the model's checkpoint (or, for an
n2p2 potential, the text of its files) and its deploy metadata: species, cutoff, number
of message-passing layers, dtype, units (docs/lammps.md).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model to export (any --model string)")
    parser.add_argument("-o", "--output", required=True, help="export file to write")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default=None,
        help="network dtype stored in the export (default: the model's own)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from atomshard.lammps.export import export_model

    dtype = getattr(torch, args.dtype) if args.dtype else None
    d = export_model(args.model, args.output, dtype=dtype)
    kind = "message passing" if d.needs_feature_exchange else "strictly local"
    print(f"wrote   {args.output}")
    print(f"species {' '.join(d.species)}")
    print(f"cutoff  {d.cutoff:g} Å, {d.n_hops} layer(s), {kind}, {d.dtype}, units {d.units}")
    elements = " ".join(d.species) if len(d.species) <= 6 else "ELEMENT_OF_EACH_TYPE..."
    print("LAMMPS  pair_style atomshard")
    print(f"        pair_coeff * * {args.output} {elements}")
    return 0
