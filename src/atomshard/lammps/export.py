"""Deployable exports: one self-contained file per model, for ``pair_style atomshard``.

An export is a ``torch.save`` dict that loads with ``weights_only=True``::

    {"format": "atomshard-export-1",
     "deploy": {species, atomic_numbers, cutoff, n_hops, needs_feature_exchange, dtype,
                units, exchange_width, atomshard},
     "checkpoint": {model_type, config, state_dict, metadata, versions}   # our models
     # or, for a Behler-Parrinello (n2p2) potential:
     "n2p2": {"files": {name: text}, "length_unit": float, "energy_unit": float}}

The ``checkpoint`` entry is an atomshard checkpoint (:mod:`atomshard.models.checkpoint`)
without its format tag, so every kind the checkpoint format covers (SevenNet-0 and
converted SevenNet checkpoints, our NequIP-class models, Allegro) is exported through it.
An n2p2 potential keeps the text of its folder's files (``input.nn``, ``scaling.data``,
``weights.ZZZ.data``) and the units it was read with, so no n2p2 folder is needed to load
it and the numbers are those of the original model. The model code itself is not copied:
loading rebuilds the model from the installed atomshard.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atomshard.errors import InputError
from atomshard.utils.files import atomic_save_torch

EXPORT_FORMAT = "atomshard-export-1"
#: LAMMPS unit style of every export (Å, eV)
UNITS = "metal"


@dataclass(frozen=True)
class Deploy:
    """What a deployment needs to know about an exported model (the ``deploy`` entry).

    Attributes:
        species: element symbols the model knows.
        atomic_numbers: their atomic numbers.
        cutoff: edge cutoff, Å.
        n_hops: message-passing layers (1 for a strictly local model).
        needs_feature_exchange: False for strictly local models.
        dtype: the network's dtype (``"float32"``/``"float64"``).
        units: LAMMPS unit style (``"metal"``).
        exchange_width: the widest per-atom feature row the model exchanges (values per
            atom; 0 for strictly local models).
        atomshard: the atomshard version that wrote the file.
    """

    species: tuple[str, ...]
    atomic_numbers: tuple[int, ...]
    cutoff: float
    n_hops: int
    needs_feature_exchange: bool
    dtype: str
    units: str
    exchange_width: int
    atomshard: str


def _model_dtype(model: torch.nn.Module) -> str:
    """The network dtype: the config's (NequIP-class, Allegro), the model's (BP), else the
    first floating parameter's."""
    config_dtype = getattr(getattr(model, "config", None), "dtype", None)
    if config_dtype is not None:
        return str(config_dtype).removeprefix("torch.")
    own = getattr(model, "dtype", None)
    if isinstance(own, torch.dtype):
        return str(own).removeprefix("torch.")
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).removeprefix("torch.")
    return "float64"


def exchange_width(model: Any) -> int:
    """The widest feature row ``model`` passes to its exchange, measured on a small
    cluster of its elements (0 when it exchanges nothing)."""
    from atomshard.graph import AtomicGraph

    if not getattr(model, "needs_feature_exchange", True):
        return 0
    widths = [0]

    def recording(x: torch.Tensor) -> torch.Tensor:
        widths.append(math.prod(x.shape[1:]))
        return x

    zs = list(model.atomic_numbers)[:2] * 2
    d = 0.45 * float(model.cutoff)
    positions = torch.tensor(
        [[0.0, 0.0, 0.0], [d, 0.0, 0.0], [0.0, d, 0.0], [0.0, 0.0, d]], dtype=torch.float64
    )[: len(zs)]
    src, dst = zip(*[(i, j) for i in range(len(zs)) for j in range(len(zs)) if i != j])
    graph = AtomicGraph(
        positions=positions,
        species=torch.tensor(zs, dtype=torch.int64),
        cell=torch.zeros(3, 3, dtype=torch.float64),
        pbc=torch.zeros(3, dtype=torch.bool),
        src=torch.tensor(src, dtype=torch.int64),
        dst=torch.tensor(dst, dtype=torch.int64),
        shifts=torch.zeros(len(src), 3, dtype=torch.int64),
        cutoff=float(model.cutoff),
    )
    with torch.no_grad():
        model.atomic_energies(graph, positions[graph.src] - positions[graph.dst], recording)
    return max(widths)


def _deploy(model: Any) -> dict[str, Any]:
    from ase.data import chemical_symbols

    from atomshard import __version__

    caps = model.capabilities()
    return {
        "species": [chemical_symbols[z] for z in caps.species],
        "atomic_numbers": list(caps.species),
        "cutoff": float(caps.cutoff),
        "n_hops": int(caps.n_hops),
        "needs_feature_exchange": bool(caps.needs_feature_exchange),
        "dtype": _model_dtype(model),
        "units": UNITS,
        "exchange_width": exchange_width(model),
        "atomshard": __version__,
    }


def _checkpoint_entry(model: Any) -> dict[str, Any]:
    from atomshard.models.checkpoint import checkpoint_payload, model_type_of

    model_type = model_type_of(model)
    config = getattr(model, "config", None)
    if model_type is None or config is None:
        raise InputError(f"cannot export a {type(model).__name__} model: no checkpoint model type")
    return checkpoint_payload(model, model_type, config, getattr(model, "metadata", None))


def _n2p2_entry(model: Any) -> dict[str, Any]:
    folder = Path(model.folder)
    names = ["input.nn", "scaling.data"] + [f"weights.{z:03d}.data" for z in model.atomic_numbers]
    files = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise InputError(f"n2p2 potential {folder}: {name} is missing")
        files[name] = path.read_text(errors="replace")
    return {
        "files": files,
        "length_unit": float(model.units.length),
        "energy_unit": float(model.units.energy),
    }


def export_model(spec: str, output: str | Path, *, dtype: torch.dtype | None = None) -> Deploy:
    """Write the model named by ``spec`` (any ``--model`` string) to ``output`` as one
    export file (atomically); returns its deploy metadata."""
    from atomshard.models.bpnn import BPNNPotential
    from atomshard.models.resolve import resolve_model

    model = resolve_model(spec, dtype=dtype)
    payload: dict[str, Any] = {"format": EXPORT_FORMAT, "deploy": _deploy(model)}
    if isinstance(model, BPNNPotential):
        payload["n2p2"] = _n2p2_entry(model)
    else:
        payload["checkpoint"] = _checkpoint_entry(model)
    atomic_save_torch(payload, output)
    return _deploy_of(payload, str(output))


def _deploy_of(payload: dict[str, Any], where: str) -> Deploy:
    d = payload.get("deploy")
    if not isinstance(d, dict):
        raise InputError(f"{where}: export has no deploy metadata")
    try:
        return Deploy(
            species=tuple(d["species"]),
            atomic_numbers=tuple(int(z) for z in d["atomic_numbers"]),
            cutoff=float(d["cutoff"]),
            n_hops=int(d["n_hops"]),
            needs_feature_exchange=bool(d["needs_feature_exchange"]),
            dtype=str(d["dtype"]),
            units=str(d["units"]),
            exchange_width=int(d["exchange_width"]),
            atomshard=str(d["atomshard"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: export deploy metadata is broken ({exc!r})") from None


def read_export(path: str | Path) -> dict[str, Any]:
    """The raw export dict at ``path``; :class:`InputError` (one line, naming the file)
    when it is missing or not an atomshard export."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"model file {str(path)!r} is not an atomshard export (not a torch file: "
            f"{type(exc).__name__}; write one with `atomshard export MODEL -o FILE`)"
        ) from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InputError(
            f"model file {str(path)!r} is not an atomshard export (format {found!r}; write "
            f"one with `atomshard export MODEL -o FILE`)"
        )
    return data


def load_export(
    path: str | Path, *, dtype: torch.dtype | None = None
) -> tuple[torch.nn.Module, Deploy]:
    """Rebuild the model of the export at ``path`` (eval mode) and its deploy metadata.

    ``dtype`` overrides the network dtype of the export (None: as exported)."""
    where = str(path)
    data = read_export(path)
    deploy = _deploy_of(data, where)
    if "n2p2" in data:
        model: torch.nn.Module = _load_n2p2(data["n2p2"], dtype or getattr(torch, deploy.dtype))
    elif "checkpoint" in data:
        from atomshard.models.checkpoint import model_from_checkpoint

        model = model_from_checkpoint(data["checkpoint"], dtype=dtype, where=where)
    else:
        raise InputError(f"{where}: export holds neither a checkpoint nor an n2p2 potential")
    model.eval()
    return model, deploy


def _load_n2p2(entry: dict[str, Any], dtype: torch.dtype):
    from atomshard.models.bpnn import load_n2p2_potential

    with tempfile.TemporaryDirectory(prefix="atomshard-n2p2-") as tmp:
        for name, text in entry["files"].items():
            if "/" in name or name.startswith("."):
                raise InputError(f"export: bad n2p2 file name {name!r}")
            (Path(tmp) / name).write_text(text)
        return load_n2p2_potential(
            tmp,
            dtype=dtype,
            length_unit=float(entry["length_unit"]),
            energy_unit=float(entry["energy_unit"]),
        )
