"""Resuming a training run: the one ``last.pt`` training layout every trainer writes
(:func:`training_payload`), the check before loading it (:func:`read_training_checkpoint`)
and the restore (:func:`restore_training`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomshard.errors import CheckpointError
from atomshard.models.checkpoint import read_checkpoint
from atomshard.utils.config import config_to_dict

if TYPE_CHECKING:
    import torch

    from atomshard.train.ema import WeightAverage

__all__ = ["read_training_checkpoint", "restore_training", "training_payload"]


def training_payload(
    *,
    model: torch.nn.Module,
    ema: WeightAverage | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
) -> dict[str, Any]:
    """The ``training`` entry of a ``last.pt``, one layout for every trainer: the raw
    (not averaged) weights, the EMA, optimiser and scheduler states, and the trainer's
    counters and history (``state``, plain data)."""
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "ema": None if ema is None else ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": dict(state),
    }


def restore_training(
    training: dict[str, Any],
    *,
    model: torch.nn.Module,
    ema: WeightAverage | None,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> dict[str, Any]:
    """Load a :func:`training_payload` into the run's objects; returns its ``state``."""
    model.load_state_dict(training["model"])
    if ema is not None and training.get("ema") is not None:
        ema.load_state_dict(training["ema"])
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    return dict(training["state"])


def read_training_checkpoint(path: str | Path, config: Any) -> dict[str, Any]:
    """The checkpoint at ``path`` (as :func:`~atomshard.models.checkpoint.read_checkpoint`
    returns it), checked to hold a ``training`` state written for the model ``config``.

    Raises:
        CheckpointError: no training state, or another model config (the message names
            the fields that differ).
    """
    data = read_checkpoint(path)
    if not isinstance(data.get("training"), dict):
        raise CheckpointError(f"{path}: has no training state to resume from")
    want = config_to_dict(config)
    if data.get("config") != want:
        saved = data.get("config") or {}
        changed = sorted(k for k, v in want.items() if saved.get(k) != v)
        raise CheckpointError(
            f"{path}: was trained with a different model config (differs in {changed}); "
            "start afresh with --no-resume or choose another output folder"
        )
    return data
