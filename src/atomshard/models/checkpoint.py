"""atomshard checkpoints: ``{format, model_type, config, state_dict, metadata, versions}``.

They hold only tensors and plain Python values, are written atomically and always load
with ``torch.load(weights_only=True)``. ``model_type`` names an entry of
:data:`MODEL_TYPES`, whose class rebuilds the model from ``config`` without guessing.
"""

from __future__ import annotations

import importlib
import platform
from pathlib import Path
from typing import Any

import torch

from atomshard.errors import CheckpointError
from atomshard.utils.config import config_from_dict, config_to_dict
from atomshard.utils.files import atomic_save_torch

FORMAT = "atomshard-checkpoint-1"

#: model_type -> "module:Class"; the class has ``config_class`` and ``from_config(cfg)``.
MODEL_TYPES: dict[str, str] = {
    "potential": "atomshard.models.potential:NequIPPotential",
    "hamiltonian": "atomshard.models.hamiltonian:HamiltonianModel",
    "lennard-jones": "atomshard.models.pair:LennardJones",
    "allegro": "atomshard.models.allegro:AllegroPotential",
}


def versions() -> dict[str, str]:
    from atomshard import __version__

    out = {
        "atomshard": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }
    try:
        import e3nn

        out["e3nn"] = str(e3nn.__version__)
    except ImportError:  # pragma: no cover - e3nn is a hard dependency
        pass
    return out


def _model_class(model_type: str):
    try:
        target = MODEL_TYPES[model_type]
    except KeyError:
        raise CheckpointError(
            f"unknown model_type {model_type!r}; known: {sorted(MODEL_TYPES)}"
        ) from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def checkpoint_payload(
    model: torch.nn.Module, model_type: str, config: Any, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint entries of ``model`` but the format tag: ``model_type``, ``config``,
    ``state_dict`` (on the CPU), ``metadata``, ``versions``."""
    return {
        "model_type": model_type,
        "config": config_to_dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
        "versions": versions(),
    }


def model_type_of(model: torch.nn.Module) -> str | None:
    """The :data:`MODEL_TYPES` name of ``model``'s class, or None."""
    target = f"{type(model).__module__}:{type(model).__name__}"
    for name, path in MODEL_TYPES.items():
        module, cls = path.split(":")
        if target == path or (
            type(model).__name__ == cls and type(model).__module__.startswith(module)
        ):
            return name
    return None


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    model_type: str,
    config: Any,
    metadata: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` atomically so that :func:`load_model` can rebuild it."""
    payload = {"format": FORMAT, **checkpoint_payload(model, model_type, config, metadata)}
    if extra:
        payload.update(extra)
    atomic_save_torch(payload, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load the raw checkpoint dict (``weights_only=True``) with clear errors."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not an atomshard checkpoint "
            f"(convert foreign checkpoints with `atomshard convert`): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an atomshard checkpoint (format "
            f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r})"
        )
    return data


def load_model(path: str | Path, *, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Rebuild the model stored at ``path`` (in eval mode)."""
    return model_from_checkpoint(read_checkpoint(path), dtype=dtype, where=str(path))


def model_from_checkpoint(
    data: dict[str, Any], *, dtype: torch.dtype | None = None, where: str = "checkpoint"
) -> torch.nn.Module:
    """Rebuild the model of a checkpoint dict (``model_type``, ``config``, ``state_dict``,
    ``metadata``; in eval mode); ``where`` names it in errors."""
    cls = _model_class(data["model_type"])
    config = config_from_dict(cls.config_class, data["config"], where=f"{where}: config")
    if dtype is not None and hasattr(config, "dtype"):
        import dataclasses

        config = dataclasses.replace(config, dtype=str(dtype).removeprefix("torch."))
    model = cls.from_config(config)
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{where!r}: weights do not fit the config: {exc}") from exc
    model.eval()
    model.metadata = data.get("metadata", {})
    return model
