"""Turn a user's ``--model`` string into a model.

Accepted forms:
    ``PATH``               an atomshard checkpoint (``.pt``)
    ``sevennet-0``         SevenNet-0 from the installed ``sevenn`` wheel, converted once
                           into the cache (``$ATOMSHARD_CACHE`` or ``~/.cache/atomshard``)
    ``sevennet:NAME|PATH`` any SevenNet checkpoint, converted the same way
    ``n2p2:FOLDER``        an n2p2 potential folder (``input.nn``, ``scaling.data``, weights)
    ``n2p2:FOLDER@bohr,hartree``  the same, stating the potential's length and energy units
                           (needed when ``input.nn`` has no unit comments and is not Å/eV)
    ``allegro:PATH``       a nequip-allegro model (``.ckpt`` or ``.nequip.zip``), converted
                           once into the cache, or an atomshard Allegro checkpoint
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from atomshard.errors import InputError


def cache_dir() -> Path:
    root = os.environ.get("ATOMSHARD_CACHE") or Path.home() / ".cache" / "atomshard"
    return Path(root)


def resolve_model(spec: str, *, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Load the model named by ``spec`` (see module docstring)."""
    from atomshard.models.checkpoint import load_model

    text = str(spec).strip()
    if not text:
        raise InputError("--model is empty")
    low = text.lower()
    if low.startswith("n2p2:"):
        from atomshard.models.bpnn import load_n2p2_potential

        folder, _, units = text[5:].partition("@")
        length_unit = energy_unit = None
        if units:
            parts = [u.strip() for u in units.split(",")]
            if len(parts) != 2 or not all(parts):
                raise InputError(
                    f"--model {text!r}: units must be 'LENGTH,ENERGY', e.g. n2p2:DIR@bohr,hartree"
                )
            length_unit, energy_unit = parts
        return load_n2p2_potential(
            folder, dtype=dtype or torch.float64, length_unit=length_unit, energy_unit=energy_unit
        )
    if low.startswith("allegro:"):
        return load_model(_converted_allegro(text.split(":", 1)[1]), dtype=dtype)
    if low.startswith("sevennet:") or low in {"sevennet-0", "sevennet_0", "7net-0"}:
        name = text.split(":", 1)[1] if ":" in text else "SevenNet-0"
        return load_model(_converted_sevennet(name), dtype=dtype)
    path = Path(text)
    if not path.exists():
        raise InputError(
            f"model {text!r}: no such checkpoint file (also accepted: sevennet-0, "
            f"sevennet:NAME_OR_PATH, n2p2:FOLDER, allegro:PATH)"
        )
    return load_model(path, dtype=dtype)


def _converted_sevennet(name: str) -> Path:
    from atomshard.models.potential.sevennet import (
        convert_sevennet_checkpoint,
        find_sevennet_checkpoint,
    )

    source = find_sevennet_checkpoint(name)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = cache_dir() / f"sevennet-{source.parent.name}-{digest}.pt"
    if not target.exists():
        convert_sevennet_checkpoint(source, target)
    return target


def _converted_allegro(name: str) -> Path:
    """An atomshard checkpoint of the nequip-allegro model at ``name`` (converted once into
    the cache), or ``name`` itself where it already is an atomshard checkpoint."""
    from atomshard.models.checkpoint import FORMAT

    source = Path(name).expanduser()
    if not source.is_file():
        raise InputError(f"--model allegro:{name}: no such file")
    try:
        head = torch.load(source, map_location="cpu", weights_only=True)
    except Exception:  # not ours (a nequip checkpoint or package): convert it
        head = None
    if isinstance(head, dict) and head.get("format") == FORMAT:
        return source
    from atomshard.models.allegro.convert import convert_allegro_model

    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = cache_dir() / f"allegro-{source.name.split('.')[0]}-{digest}.pt"
    if not target.exists():
        convert_allegro_model(source, target)
    return target
