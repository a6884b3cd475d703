"""What ``atomshard eval --ranks N`` (and the same command under torchrun) calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomshard.comm import DEFAULT_TIMEOUT_S, env_world, init_communicator
from atomshard.errors import InputError
from atomshard.runtime._api import (
    ModelSpec,
    evaluate_distributed,
    format_profile,
    load_potential,
    write_profile,
)
from atomshard.runtime._evaluate import FrameResult, evaluate_frames
from atomshard.runtime._partition import PartitionSpec


def frame_result_dict(res: FrameResult) -> dict[str, Any]:
    """ASE-style results of one frame: energy, energies, forces, Voigt stress (xx..xy)."""
    out: dict[str, Any] = {"energy": res.energy, "free_energy": res.energy}
    if res.energies is not None:
        out["energies"] = res.energies
    if res.forces is not None:
        out["forces"] = res.forces
    if res.stress is not None:
        s = res.stress
        out["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    return out


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
        ``{"results": [ASE-style dict per frame], "seconds": float, "profile": ...}`` on
        rank 0, None on the other ranks of a torchrun job (they print nothing).
    """
    if env_world() is not None and env_world()[1] > 1:  # type: ignore[index]
        if n_ranks != 1:
            raise InputError("--ranks spawns local processes; under torchrun/srun leave it at 1")
        comm = init_communicator(timeout_s=timeout_s)
        try:
            potential = load_potential(model, dtype=dtype).to(comm.device)
            out = evaluate_frames(
                comm,
                potential,
                frames if comm.rank == 0 else None,
                partition=partition,
                transport=transport,
                profile=profile_path is not None,
            )
        finally:
            comm.close()
        if comm.rank != 0:
            return None
        world = comm.world_size
    else:
        out = evaluate_distributed(
            model,
            frames,
            n_ranks,
            partition=partition,
            transport=transport,
            dtype=dtype,
            profile=profile_path is not None,
            timeout_s=timeout_s,
        )
        world = n_ranks
    if profile_path is not None:
        write_profile(profile_path, out, n_ranks=world)
        print(format_profile(out["profile"]))
        print(f"wrote per-rank timings to {profile_path}")
    return {
        "results": [frame_result_dict(r) for r in out["frames"]],
        "seconds": out["seconds"],
    }
