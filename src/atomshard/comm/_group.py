"""Communicators: the null one (serial) and one over a torch.distributed process group.

Both expose the same small interface, so serial and distributed runs share one code path
(as ASE's null ``world`` does). Every blocking call here waits with a timeout and turns a
timeout into :class:`CommError` that says which rank waited for what — a rank that dies
makes its peers fail with a readable message instead of hanging.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from atomshard.errors import AtomshardError, InputError

#: Seconds any collective or point-to-point operation may wait before giving up.
DEFAULT_TIMEOUT_S = 60.0


class CommError(AtomshardError):
    """A collective failed or timed out, usually because another rank died or raised."""


class Pending:
    """Operations posted with ``start_*`` and not yet waited for.

    :meth:`wait` blocks (with the communicator's timeout) until they are complete; it is
    idempotent. Between posting and waiting the caller may compute, but must not touch the
    buffers that are being sent or received.
    """

    __slots__ = ("_comm", "_what", "_works")

    def __init__(self, comm: Any, works: Sequence[Any], what: str) -> None:
        self._comm = comm
        self._works = list(works)
        self._what = what

    def wait(self) -> None:
        works, self._works = self._works, []
        if works:
            self._comm._wait(works, self._what)


#: One tensor per peer rank: the rows sent to it, or the preallocated buffer its rows land in.
PeerTensors = dict[int, torch.Tensor]


class _Communicator:
    """What both communicators share: the posting calls, and what they do on one rank.

    A communicator of several ranks implements ``_start_p2p`` and ``_start_all_to_all``; on
    one rank there is nobody to send to, so nothing is posted (an all-to-all is a copy).
    A caller that has nothing to compute meanwhile calls ``.wait()`` on the result at once.
    """

    rank: int
    world_size: int
    # what a communicator of several ranks posts: (sends, recvs, what) and
    # (output, input, output_splits, input_splits, what)
    _start_p2p: Callable[[PeerTensors, PeerTensors, str], Pending]
    _start_all_to_all: Callable[..., Pending]

    def start_p2p(
        self, sends: PeerTensors, recvs: PeerTensors, *, what: str = "exchange"
    ) -> Pending:
        """Post every send and receive at once (``batch_isend_irecv``); wait with the result.

        Shapes:
            sends[peer]: contiguous tensor sent to ``peer``
            recvs[peer]: preallocated contiguous tensor filled from ``peer``
        """
        if not sends and not recvs:
            return Pending(self, [], what)
        if self.world_size == 1:
            raise CommError("a single-process run has no peers to exchange with")
        return self._start_p2p(sends, recvs, what)

    def start_all_to_all(
        self,
        output: torch.Tensor,
        input: torch.Tensor,
        output_splits: Sequence[int],
        input_splits: Sequence[int],
        *,
        what: str = "all_to_all",
    ) -> Pending:
        """Post one ``all_to_all_single`` (splits are row counts per rank along dim 0) and
        return without waiting (gloo runs it on its own worker thread, NCCL on its own
        stream)."""
        if self.world_size == 1:
            output.copy_(input)
            return Pending(self, [], what)
        return self._start_all_to_all(output, input, output_splits, input_splits, what)


class NullCommunicator(_Communicator):
    """A single process: rank 0 of 1. Reductions are identities, there are no peers."""

    rank = 0
    world_size = 1
    backend = "none"

    def __init__(self, *, device: torch.device | str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S):
        self.device = torch.device(device)
        self.timeout_s = float(timeout_s)

    @property
    def is_distributed(self) -> bool:
        return False

    def all_reduce_sum(self, tensor: torch.Tensor, *, what: str = "all_reduce") -> torch.Tensor:
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor, *, what: str = "all_reduce") -> torch.Tensor:
        return tensor

    def broadcast(self, tensor: torch.Tensor, *, src: int = 0, what: str = "broadcast") -> None:
        return None

    def broadcast_object(self, obj: Any, *, src: int = 0) -> Any:
        return obj

    def scatter_objects(self, objs: Sequence[Any] | None, *, src: int = 0) -> Any:
        if objs is None or len(objs) != 1:
            raise CommError("scatter_objects on one rank needs exactly one object")
        return objs[0]

    def gather_objects(self, obj: Any, *, dst: int = 0) -> list[Any] | None:
        return [obj]

    def barrier(self, *, what: str = "barrier") -> None:
        return None

    def close(self) -> None:
        return None


class TorchCommunicator(_Communicator):
    """A torch.distributed process group (gloo on CPU, NCCL on GPU) with timeouts.

    Args:
        group: an initialised process group (the default group when None).
        device: where tensors for this backend live (``cuda:LOCAL_RANK`` for NCCL).
        timeout_s: seconds each operation may wait.
    """

    def __init__(
        self,
        group: dist.ProcessGroup | None = None,
        *,
        device: torch.device | str = "cpu",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not dist.is_initialized():
            raise CommError("torch.distributed is not initialised; use init_communicator()")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))
        self.device = torch.device(device)
        self.timeout_s = float(timeout_s)

    @property
    def is_distributed(self) -> bool:
        return True

    # -- plumbing -----------------------------------------------------------------------
    def _wait(self, works: Sequence[Any], what: str) -> None:
        timeout = timedelta(seconds=self.timeout_s)
        try:
            for work in works:
                if work is not None:
                    work.wait(timeout)
        except Exception as exc:  # gloo raises RuntimeError, NCCL DistBackendError
            raise self._failure(what, exc) from exc

    def _failure(self, what: str, exc: BaseException) -> CommError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CommError(
            f"rank {self.rank}/{self.world_size}: {what} failed or timed out after at most "
            f"{self.timeout_s:g} s — another rank has probably died or raised "
            f"(see its message); backend said: {first[:300]}"
        )

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CommError:
            raise
        except Exception as exc:
            raise self._failure(what, exc) from exc

    # -- tensors ------------------------------------------------------------------------
    def all_reduce_sum(self, tensor: torch.Tensor, *, what: str = "all_reduce") -> torch.Tensor:
        """Sum of ``tensor`` over ranks (a new tensor; the input is not modified)."""
        out = tensor.detach().clone()
        work = self._guard(what, dist.all_reduce, out, group=self.group, async_op=True)
        self._wait([work], what)
        return out

    def all_reduce_max(self, tensor: torch.Tensor, *, what: str = "all_reduce") -> torch.Tensor:
        out = tensor.detach().clone()
        work = self._guard(
            what, dist.all_reduce, out, op=dist.ReduceOp.MAX, group=self.group, async_op=True
        )
        self._wait([work], what)
        return out

    def _start_p2p(self, sends: PeerTensors, recvs: PeerTensors, what: str) -> Pending:
        ops = [dist.P2POp(dist.irecv, buf, peer, self.group) for peer, buf in recvs.items()]
        ops += [dist.P2POp(dist.isend, buf, peer, self.group) for peer, buf in sends.items()]
        return Pending(self, self._guard(what, dist.batch_isend_irecv, ops), what)

    def _start_all_to_all(
        self,
        output: torch.Tensor,
        input: torch.Tensor,
        output_splits: Sequence[int],
        input_splits: Sequence[int],
        what: str,
    ) -> Pending:
        work = self._guard(
            what,
            dist.all_to_all_single,
            output,
            input,
            list(output_splits),
            list(input_splits),
            group=self.group,
            async_op=True,
        )
        return Pending(self, [work], what)

    def broadcast(self, tensor: torch.Tensor, *, src: int = 0, what: str = "broadcast") -> None:
        """Overwrite ``tensor`` in place with rank ``src``'s copy."""
        work = self._guard(what, dist.broadcast, tensor, src, group=self.group, async_op=True)
        self._wait([work], what)

    # -- Python objects (set-up only; they ride on the group's default timeout) ----------
    def broadcast_object(self, obj: Any, *, src: int = 0) -> Any:
        box = [obj if self.rank == src else None]
        self._guard("broadcast_object", dist.broadcast_object_list, box, src, group=self.group)
        return box[0]

    def scatter_objects(self, objs: Sequence[Any] | None, *, src: int = 0) -> Any:
        """Rank ``src`` passes one object per rank; every rank gets its own."""
        if self.rank == src and (objs is None or len(objs) != self.world_size):
            raise CommError(f"scatter_objects needs {self.world_size} objects on rank {src}")
        out: list[Any] = [None]
        self._guard(
            "scatter_objects",
            dist.scatter_object_list,
            out,
            list(objs) if self.rank == src and objs is not None else None,
            src,
            group=self.group,
        )
        return out[0]

    def gather_objects(self, obj: Any, *, dst: int = 0) -> list[Any] | None:
        """Objects of all ranks, in rank order, on rank ``dst`` (None elsewhere)."""
        out: list[Any] | None = [None] * self.world_size if self.rank == dst else None
        self._guard("gather_objects", dist.gather_object, obj, out, dst, group=self.group)
        return out

    def barrier(self, *, what: str = "barrier") -> None:
        work = self._guard(what, dist.barrier, group=self.group, async_op=True)
        self._wait([work], what)

    def close(self) -> None:
        """Destroy the process group (idempotent)."""
        if dist.is_initialized():
            dist.destroy_process_group()


Communicator = NullCommunicator | TorchCommunicator


def _destroy_at_exit() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def env_world() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's or srun's variables, or None."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return (
            int(env["SLURM_PROCID"]),
            int(env["SLURM_NTASKS"]),
            int(env.get("SLURM_LOCALID", "0")),
        )
    return None


def init_communicator(
    *,
    backend: str = "auto",
    rank: int | None = None,
    world_size: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Communicator:
    """Join (or create) the process group and return a communicator.

    With no arguments, reads torchrun's (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``) or srun's (``SLURM_PROCID``, ``SLURM_NTASKS``,
    ``SLURM_LOCALID``; ``MASTER_ADDR``/``MASTER_PORT`` must be exported) variables; when
    neither is set and no ``rank``/``world_size`` is given, returns a
    :class:`NullCommunicator`. A world of one is also a :class:`NullCommunicator`.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or ``"auto"`` (NCCL when CUDA is available).
        rank, world_size: programmatic set-up (both or neither).
        master_addr, master_port: rendezvous address (default: environment, localhost).
        timeout_s: seconds every collective may wait (default 60).
    """
    if not timeout_s > 0:
        raise InputError(f"communication timeout must be positive, got {timeout_s}")
    if (rank is None) != (world_size is None):
        raise InputError("give both rank and world_size, or neither")
    local_rank = 0
    if rank is None or world_size is None:
        found = env_world()
        if found is None:
            return NullCommunicator(timeout_s=timeout_s)
        rank, world_size, local_rank = found
    if not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is outside world of size {world_size}")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise InputError(f"backend must be gloo, nccl or auto, got {backend!r}")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    if world_size == 1:
        return NullCommunicator(device=device, timeout_s=timeout_s)
    if dist.is_initialized():
        return TorchCommunicator(device=device, timeout_s=timeout_s)
    addr = master_addr or os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = master_port or int(os.environ.get("MASTER_PORT", "29500"))
    try:
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{addr}:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        # a group still alive when the interpreter exits aborts the process ("terminate
        # called without an active exception"); scripts that never call close() are covered
        atexit.register(_destroy_at_exit)
    except Exception as exc:
        raise CommError(
            f"rank {rank}/{world_size}: could not join the {backend} process group at "
            f"{addr}:{port} within {timeout_s:g} s: {str(exc).splitlines()[0][:300]}"
        ) from exc
    return TorchCommunicator(device=device, timeout_s=timeout_s)
