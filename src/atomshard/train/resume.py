"""Resuming a training run: the one check both trainers make before loading ``last.pt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atomshard.errors import CheckpointError
from atomshard.models.checkpoint import read_checkpoint
from atomshard.utils.config import config_to_dict

__all__ = ["read_training_checkpoint"]


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
