"""``atomshard info CHECKPOINT``: what an atomshard checkpoint holds.

Prints the model type, species, cutoff, parameter count, config, metadata and the
versions it was written with; ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="an atomshard checkpoint (.pt)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def describe(path: str) -> dict[str, Any]:
    """A plain-Python description of the checkpoint at ``path``."""
    from ase.data import chemical_symbols

    from atomshard.models.checkpoint import read_checkpoint

    data = read_checkpoint(path)
    state = data.get("state_dict", {})
    n_stored = sum(int(v.numel()) for v in state.values() if hasattr(v, "numel"))
    from atomshard.models.checkpoint import load_model

    model = load_model(path)
    n_params = sum(int(p.numel()) for p in model.parameters())
    cfg = data.get("config", {})
    # Potentials list atomic numbers; the Hamiltonian model names elements in its basis.
    species = [int(z) for z in getattr(model, "atomic_numbers", None) or cfg.get("species", [])]
    if not species and isinstance(cfg.get("basis"), dict):
        species = [chemical_symbols.index(el) for el in cfg["basis"] if el in chemical_symbols]
    return {
        "path": str(path),
        "format": data.get("format"),
        "model_type": data.get("model_type"),
        "species": [chemical_symbols[z] for z in species if 0 < z < len(chemical_symbols)],
        "cutoff": cfg.get("cutoff"),
        "n_parameters": n_params,
        "n_stored_values": n_stored,
        "config": cfg,
        "metadata": data.get("metadata", {}),
        "versions": data.get("versions", {}),
    }


def _short(value: Any, width: int = 88) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


def run(args: argparse.Namespace) -> int:
    info = describe(args.checkpoint)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"checkpoint  {info['path']}")
    print(f"model_type  {info['model_type']}  ({info['format']})")
    print(f"cutoff      {info['cutoff']} Å")
    print(f"species     {len(info['species'])}: {_short(' '.join(info['species']), 76)}")
    print(
        f"parameters  {info['n_parameters']:,} ({info['n_stored_values']:,} values stored "
        "with buffers)"
    )
    print("config:")
    for key, value in info["config"].items():
        print(f"  {key:20s} {_short(value, 66)}")
    print("metadata:")
    for key, value in info["metadata"].items():
        print(f"  {key:20s} {_short(value, 66)}")
    print("versions:   " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    return 0
