"""Library entry points behind ``atomshard eval --ranks N`` and torchrun scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from atomshard.comm import DEFAULT_TIMEOUT_S, Communicator, run_on_ranks
from atomshard.errors import InputError
from atomshard.models.base import Potential
from atomshard.runtime._evaluate import FrameResult, evaluate_frames
from atomshard.runtime._partition import PartitionSpec

ModelSpec = str | Potential


def load_potential(model: ModelSpec, *, dtype: torch.dtype | None = None) -> Potential:
    """A :class:`Potential` from a ``--model`` string, or the given one unchanged."""
    if isinstance(model, str):
        from atomshard.models.resolve import resolve_model

        model = resolve_model(model, dtype=dtype)  # type: ignore[assignment]
    if not isinstance(model, Potential):
        raise InputError(f"{type(model).__name__} is not an interatomic potential")
    return model


def _eval_rank(
    comm: Communicator,
    model: ModelSpec,
    *,
    frames: list[Any] | None,
    dtype: torch.dtype | None,
    partition: PartitionSpec,
    transport: str,
    forces: bool,
    stress: bool,
    profile: bool,
    max_atoms: int | str | None = None,
) -> dict[str, Any] | None:
    """One rank of :func:`evaluate_distributed` (module level so it pickles)."""
    potential = load_potential(model, dtype=dtype).to(comm.device)
    out = evaluate_frames(
        comm,
        potential,
        frames,
        partition=partition,
        transport=transport,
        forces=forces,
        stress=stress,
        profile=profile,
        max_atoms=max_atoms,
    )
    return out if comm.rank == 0 else None


def evaluate_distributed(
    model: ModelSpec,
    frames: list[Any] | None,
    n_ranks: int,
    *,
    partition: PartitionSpec = "auto",
    transport: str = "auto",
    forces: bool = True,
    stress: bool = True,
    profile: bool = False,
    profile_path: str | Path | None = None,
    dtype: torch.dtype | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    threads_per_rank: int | None = None,
    max_atoms: int | str | None = None,
) -> dict[str, Any] | None:
    """Evaluate ``frames`` on ``n_ranks`` local processes (``atomshard eval --ranks N``),
    or on the ranks of the torchrun/srun job this process belongs to.

    Args:
        model: a ``--model`` string (each rank loads it) or a :class:`Potential`.
        frames: :class:`ase.Atoms` or :class:`~atomshard.graph.Structure` objects; only
            rank 0 receives them (under torchrun, only rank 0's are read).
        n_ranks: processes to spawn on this machine (1: evaluate in this process, or
            join the torchrun/srun job; it must be 1 there).
        partition: ``"lownn"``, ``"metis"``, ``"grid"``, ``"auto"``, a part vector or a
            callable (see :func:`atomshard.runtime.partition_atoms`).
        transport: halo-exchange transport (``"auto"``, ``"p2p"``, ``"all_to_all"``).
        profile: collect per-rank exchange/compute timings; ``profile_path`` writes them
            as JSON.
        timeout_s: collective timeout; a failing rank stops every rank well within it.
        max_atoms: the most atoms a rank evaluates at once (``--block-atoms``: a number or
            ``"auto"``); larger parts are evaluated block by block. None: no limit.

    Returns:
        ``{"frames": [FrameResult, ...], "seconds": float, "profile": [per-rank dict]}``
        (``profile`` only when requested); None on the other ranks of a torchrun job.

    Raises:
        RankFailure: a rank raised or died (its message is included).
        InputError: ``n_ranks < 1``, or ``n_ranks != 1`` under torchrun/srun.
    """
    profile = profile or profile_path is not None
    out = run_on_ranks(
        _eval_rank,
        n_ranks,
        model,
        timeout_s=timeout_s,
        threads_per_rank=threads_per_rank,
        root_only={"frames": None if frames is None else list(frames)},
        dtype=dtype,
        partition=partition,
        transport=transport,
        forces=forces,
        stress=stress,
        profile=profile,
        max_atoms=max_atoms,
    )
    if out is not None and profile_path is not None:
        write_profile(profile_path, out, n_ranks=len(out["profile"]))
    return out


def write_profile(path: str | Path, result: dict[str, Any], *, n_ranks: int) -> None:
    """Write the per-rank timing summaries of a run as JSON."""
    from atomshard.utils.files import atomic_write

    doc = {
        "world_size": n_ranks,
        "seconds": result.get("seconds"),
        "torch": torch.__version__,
        "ranks": result.get("profile", []),
    }
    with atomic_write(str(path)) as handle:
        handle.write(json.dumps(doc, indent=2))


def format_profile(ranks: list[dict[str, Any]]) -> str:
    """A per-rank table of step, exchange (pack, send/recv, unpack) and compute times."""
    lines = [
        f"{'rank':>4} {'step ms':>9} {'compute':>9} {'exchange':>9} {'pack':>8} "
        f"{'send/recv':>9} {'unpack':>8} {'exch %':>7}  layer compute ms"
    ]
    for r in ranks:
        layers = " ".join(f"{1e3 * t:.2f}" for t in r.get("forward_layer_compute_s", []))
        lines.append(
            f"{r['rank']:>4} {1e3 * r['step_s']:>9.2f} {1e3 * r['compute_s']:>9.2f} "
            f"{1e3 * r['exchange_s']:>9.2f} {1e3 * r['pack_s']:>8.2f} "
            f"{1e3 * r['send_recv_s']:>9.2f} {1e3 * r['unpack_s']:>8.2f} "
            f"{100 * r['exchange_fraction']:>6.1f}%  {layers}"
        )
    return "\n".join(lines)


__all__ = [
    "FrameResult",
    "evaluate_distributed",
    "format_profile",
    "load_potential",
    "write_profile",
]
