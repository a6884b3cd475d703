"""``atomshard convert sevennet SOURCE [-o OUT.pt]``: import a foreign checkpoint.

``SOURCE`` is a SevenNet checkpoint file or a pretrained name shipped in the ``sevenn``
wheel (SevenNet-0, 7net-0, SevenNet-0_22May2024, SevenNet-l3i5). The result is an
atomshard checkpoint for :class:`~atomshard.models.potential.NequIPPotential`; no
``sevenn`` code runs, then or later.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["sevennet"], help="format of the source checkpoint")
    parser.add_argument("source", help="checkpoint file or pretrained name (e.g. SevenNet-0)")
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="output file (default: <name>.atomshard.pt in the current folder)",
    )


def default_output(source: Path, name: str) -> Path:
    """``<folder>.atomshard.pt`` for a pretrained name, ``<stem>.atomshard.pt`` for a file."""
    is_file = Path(name).expanduser().is_file()
    stem = Path(name).stem if is_file else source.parent.name
    return Path(f"{stem}.atomshard.pt")


def run(args: argparse.Namespace) -> int:
    from atomshard.models.checkpoint import read_checkpoint
    from atomshard.models.potential.sevennet import (
        convert_sevennet_checkpoint,
        find_sevennet_checkpoint,
    )

    source = find_sevennet_checkpoint(args.source)
    target = Path(args.output) if args.output else default_output(source, args.source)
    convert_sevennet_checkpoint(source, target)
    data = read_checkpoint(target)
    cfg, meta = data["config"], data["metadata"]
    print(f"read    {source}")
    print(f"wrote   {target} (atomshard checkpoint, model_type {data['model_type']})")
    print(
        f"model   {meta['sevennet_model']}: {cfg['n_layers']} layers, l_max {cfg['l_max']}, "
        f"cutoff {cfg['cutoff']} Å, {len(cfg['species'])} elements"
    )
    return 0
