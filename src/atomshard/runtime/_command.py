"""What ``atomshard eval --ranks N`` (and the same command under torchrun) calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from atomshard.comm import DEFAULT_TIMEOUT_S
from atomshard.runtime._api import ModelSpec, evaluate_distributed, format_profile
from atomshard.runtime._evaluate import frame_result_dict
from atomshard.runtime._partition import PartitionSpec


def evaluate_for_command(
    model: ModelSpec,
    frames: list[Any],
    *,
    n_ranks: int = 1,
    partition: PartitionSpec = "auto",
    transport: str = "auto",
    dtype: torch.dtype | None = None,
    profile_path: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any] | None:
    """Evaluate ``frames`` the way the ``eval`` command asked for.

    Under torchrun/srun (``RANK``/``WORLD_SIZE`` set) every launched process joins the
    group and ``n_ranks`` must stay 1; otherwise ``n_ranks > 1`` spawns local ranks.

    Returns:
        ``{"results": [ASE-style dict per frame], "seconds": float}`` on rank 0, None on
        the other ranks of a torchrun job (they print nothing).
    """
    out = evaluate_distributed(
        model,
        frames,
        n_ranks,
        partition=partition,
        transport=transport,
        dtype=dtype,
        profile_path=profile_path,
        timeout_s=timeout_s,
    )
    if out is None:
        return None
    if profile_path is not None:
        print(format_profile(out["profile"]))
        print(f"wrote per-rank timings to {profile_path}")
    return {
        "results": [frame_result_dict(r) for r in out["frames"]],
        "seconds": out["seconds"],
    }


__all__ = ["evaluate_for_command", "frame_result_dict"]
