"""``atomshard convert {sevennet,allegro} SOURCE [-o OUT.pt]``: import a foreign checkpoint.

``sevennet``: ``SOURCE`` is a SevenNet checkpoint file or a pretrained name shipped in the
``sevenn`` wheel (SevenNet-0, 7net-0, SevenNet-0_22May2024, SevenNet-l3i5). The result is
an atomshard checkpoint for :class:`~atomshard.models.potential.NequIPPotential`; no
``sevenn`` code runs, then or later.

``allegro``: ``SOURCE`` is a nequip-allegro training checkpoint (``.ckpt``) or package
(``.nequip.zip``), read by nequip's own loader; the result is an atomshard checkpoint for
:class:`~atomshard.models.allegro.AllegroPotential`, which runs without nequip.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind", choices=["sevennet", "allegro"], help="format of the source checkpoint"
    )
    parser.add_argument("source", help="checkpoint file or pretrained name (e.g. SevenNet-0)")
    parser.add_argument(
        "--species",
        default=None,
        help="allegro: atomic numbers or symbols of the model's types, comma-separated, where "
        "its type names are not chemical symbols (e.g. 8,1)",
    )
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
    if args.kind == "allegro":
        return _run_allegro(args)
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


def _species(text: str | None) -> tuple[int, ...] | None:
    from ase.data import atomic_numbers

    from atomshard.errors import InputError

    if text is None:
        return None
    out = []
    for item in (t.strip() for t in text.split(",")):
        if item.isdigit():
            out.append(int(item))
        elif item in atomic_numbers:
            out.append(atomic_numbers[item])
        else:
            raise InputError(f"--species: {item!r} is neither an atomic number nor a symbol")
    return tuple(out)


def _run_allegro(args: argparse.Namespace) -> int:
    from atomshard.models.allegro.convert import convert_allegro_model

    source = Path(args.source).expanduser()
    target = Path(args.output) if args.output else Path(f"{source.name.split('.')[0]}.atomshard.pt")
    model = convert_allegro_model(source, target, species=_species(args.species))
    cfg = model.config
    print(f"read    {source}")
    print(f"wrote   {target} (atomshard checkpoint, model_type allegro)")
    print(
        f"model   Allegro: {cfg.n_layers} layers, l_max {cfg.l_max}, {cfg.n_scalar} scalar / "
        f"{cfg.n_tensor} tensor features, cutoff {cfg.cutoff} Å, species {list(cfg.species)}, "
        f"ZBL {'on' if cfg.zbl else 'off'}, dtype {cfg.dtype}"
    )
    return 0
