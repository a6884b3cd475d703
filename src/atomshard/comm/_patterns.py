"""The rank patterns every multi-rank entry point uses, written once.

- :func:`run_on_ranks` — run ``fn(comm, ...)`` on the ranks of a torchrun/srun job, on
  ``n_ranks`` spawned local ranks, or (one rank) in this process with a
  :class:`~atomshard.comm.NullCommunicator`.
- :func:`root_call` — rank 0 computes, every rank gets the result *or the exception*
  (so a bad input stops every rank at once instead of leaving peers in a collective
  until the timeout).
- :func:`root_scatter` — the same with one item per rank: rank 0 computes the list,
  rank ``r`` gets item ``r`` (a partition's parts) or the exception.
- :func:`gather_by_id` — per-rank rows keyed by global atom ids, gathered on rank 0 in
  id order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from atomshard.comm._group import (
    DEFAULT_TIMEOUT_S,
    Communicator,
    NullCommunicator,
    env_world,
    init_communicator,
)
from atomshard.comm._launch import launch
from atomshard.errors import InputError


def run_on_ranks(
    fn: Callable[..., Any],
    n_ranks: int,
    *args: Any,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    threads_per_rank: int | None = None,
    root_only: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """``fn(comm, *args, **kwargs)`` on every rank; rank 0's return value.

    Under torchrun/srun (``RANK``/``WORLD_SIZE`` set, world > 1) every launched process
    calls this with ``n_ranks=1``, joins the group and runs ``fn``; other ranks get None.
    Otherwise ``n_ranks > 1`` spawns local ranks (gloo) and ``n_ranks == 1`` runs ``fn``
    here with a :class:`NullCommunicator`. ``root_only`` keyword arguments reach rank 0
    only (the others get None for them): big inputs are not pickled N times.

    Raises:
        InputError: ``n_ranks < 1``, or ``n_ranks != 1`` inside a torchrun/srun job.
    """
    world = env_world()
    if world is not None and world[1] > 1:
        if n_ranks != 1:
            raise InputError("--ranks spawns local processes; under torchrun/srun leave it at 1")
        comm = init_communicator(timeout_s=timeout_s)
        try:
            extra = {k: (v if comm.rank == 0 else None) for k, v in (root_only or {}).items()}
            value = fn(comm, *args, **kwargs, **extra)
        finally:
            comm.close()
        return value if comm.rank == 0 else None
    if n_ranks < 1:
        raise InputError(f"--ranks must be at least 1, got {n_ranks}")
    if n_ranks == 1:
        return fn(NullCommunicator(timeout_s=timeout_s), *args, **kwargs, **(root_only or {}))
    return launch(
        fn,
        n_ranks,
        *args,
        timeout_s=timeout_s,
        threads_per_rank=threads_per_rank,
        root_only=root_only,
        **kwargs,
    )[0]


def root_call(comm: Communicator, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on rank 0; every rank returns its result or raises its error.

    Collective. Other ranks do not call ``fn``. The result must pickle (it is broadcast).
    """
    value: Any = None
    if comm.rank == 0:
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # every rank raises it, none waits for a timeout
            value = _Failure(exc)
    if comm.world_size > 1:
        value = comm.broadcast_object(value)
    if isinstance(value, _Failure):
        raise value.error
    return value


def root_scatter(comm: Communicator, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on rank 0 returns one item per rank; rank ``r`` returns
    item ``r``, or every rank raises rank 0's error.

    Collective. Other ranks do not call ``fn``. The items must pickle (they are scattered,
    each rank receives only its own).
    """
    items: list[Any] | None = None
    if comm.rank == 0:
        try:
            items = list(fn(*args, **kwargs))
            if len(items) != comm.world_size:
                raise ValueError(f"{len(items)} items for {comm.world_size} ranks")
        except Exception as exc:  # every rank raises it, none waits for a timeout
            if comm.world_size == 1:
                raise
            items = [_Failure(exc)] * comm.world_size
    if comm.world_size == 1:
        assert items is not None
        return items[0]
    mine = comm.scatter_objects(items)
    if isinstance(mine, _Failure):
        raise mine.error
    return mine


class _Failure:
    """An exception in transit (so a function may itself return an exception object)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def gather_by_id(
    comm: Communicator, ids: np.ndarray, **rows: np.ndarray
) -> dict[str, np.ndarray] | None:
    """Rows of atoms spread over ranks, in global id order on rank 0 (None elsewhere).

    Collective. Each rank passes the ids of the atoms it holds (``[n]`` int) and any number
    of arrays whose first dimension is ``n``; rank 0 gets ``{"ids": sorted ids, name:
    [n_total, ...] array}`` with row ``i`` belonging to the ``i``-th smallest id. The ids
    over all ranks are usually ``0..n_total-1``, each once; then row ``i`` is atom ``i``.
    """
    mine = (np.asarray(ids), {k: np.asarray(v) for k, v in rows.items()})
    gathered = comm.gather_objects(mine) if comm.world_size > 1 else [mine]
    if gathered is None:
        return None
    all_ids = np.concatenate([g[0].reshape(-1) for g in gathered]).astype(np.int64)
    order = np.argsort(all_ids, kind="stable")
    out = {"ids": all_ids[order]}
    for name, first in rows.items():
        shape = np.asarray(first).shape[1:]
        stacked = np.concatenate([g[1][name].reshape(-1, *shape) for g in gathered])
        out[name] = stacked[order]
    return out
