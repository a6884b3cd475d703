"""Local launcher: N ranks on this machine (``--ranks N``), no hangs when one fails.

:class:`LocalGroup` spawns N processes once, joins them into a gloo group on a free
localhost port and runs any number of collective tasks on them (tests reuse one group
for many cases); :func:`launch` is the one-shot form the CLI uses. A rank that raises
prints its traceback to stderr (prefixed with its rank) and reports the error; a rank
that dies is noticed by its exit code. Either way the parent gives the others a few
seconds to report, terminates whatever is left and raises :class:`RankFailure` naming
the rank and its message — well within the 60 s collective timeout.
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import pickle
import queue
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from atomshard.comm._group import DEFAULT_TIMEOUT_S, Communicator, init_communicator
from atomshard.errors import AtomshardError, InputError
from atomshard.utils.process import configure_process, passive_waits

#: Seconds the other ranks get to report their own errors after one rank failed.
GRACE_S = 3.0


class RankFailure(AtomshardError):
    """A rank of a local group raised or died; the message names it and says why."""


def _context() -> Any:
    """A forkserver context whose server has already imported torch and atomshard.

    Ranks are forked from that clean server (never from a parent whose OpenMP pool may
    be running), so each rank starts in milliseconds instead of re-importing torch.
    """
    ctx = mp.get_context("forkserver")
    # names only: warming the server with the heavy imports of any rank's work (e3nn,
    # the models) does not make this layer depend on them
    ctx.set_forkserver_preload(["torch", "e3nn", "atomshard.models", "atomshard.runtime"])
    return ctx


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    timeout_s: float,
    threads: int,
    tasks: Any,
    results: Any,
) -> None:
    # a rank that dies of a signal (a segfault in native code) prints every thread's
    # Python stack to its stderr first, so the launcher's "died with exit code -11" has
    # a place to look
    faulthandler.enable()
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS=str(threads),
    )
    # the forkserver the ranks fork from is a fresh interpreter, not a fork of the
    # launching process: the allocator settings (big blocks kept on the heap) are made
    # here again, else every large temporary of a step is mmap'ed and unmapped anew
    configure_process()
    import torch

    torch.set_num_threads(threads)
    comm: Communicator | None = None
    try:
        comm = init_communicator(backend=backend, timeout_s=timeout_s)
        results.put((rank, "ready", b""))
        while True:
            task = tasks.get()
            if task is None:
                break
            fn, args, kwargs = pickle.loads(task)
            value = fn(comm, *args, **kwargs)
            results.put((rank, "ok", pickle.dumps(value)))
    except BaseException as exc:  # report everything, then die so peers stop waiting
        text = f"{type(exc).__name__}: {exc}"
        # a user error is a complete message; anything else gets its traceback
        tb = str(exc) if isinstance(exc, AtomshardError) else traceback.format_exc()
        sys.stderr.write("".join(f"[rank {rank}] {line}\n" for line in tb.splitlines()))
        sys.stderr.flush()
        results.put((rank, "error", text.encode()))
        results.close()
        results.join_thread()
        os._exit(1)  # skip the group's destructor, which may wait on dead peers
    if comm is not None:
        comm.close()


class LocalGroup:
    """N local ranks joined in a process group, running tasks until closed.

    Args:
        n_ranks: number of processes (>= 1).
        backend: ``"gloo"`` (default) or ``"nccl"``.
        timeout_s: collective timeout inside the ranks.
        threads_per_rank: torch threads per rank (default: cores // n_ranks, at least 1).

    Example:
        >>> with LocalGroup(2) as group:                      # doctest: +SKIP
        ...     ranks = group.run(lambda_free_function, 3.0)   # one result per rank
    """

    def __init__(
        self,
        n_ranks: int,
        *,
        backend: str = "gloo",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        threads_per_rank: int | None = None,
    ) -> None:
        if n_ranks < 1:
            raise InputError(f"--ranks must be at least 1, got {n_ranks}")
        self.n_ranks = int(n_ranks)
        self.timeout_s = float(timeout_s)
        threads = threads_per_rank or max(1, (os.cpu_count() or 1) // self.n_ranks)
        ctx = _context()
        self._results = ctx.Queue()
        self._tasks = [ctx.Queue() for _ in range(self.n_ranks)]
        port = free_port()
        self._procs = [
            ctx.Process(
                target=_worker,
                args=(r, self.n_ranks, port, backend, timeout_s, threads, q, self._results),
                name=f"atomshard-rank-{r}",
                daemon=True,
            )
            for r, q in enumerate(self._tasks)
        ]
        self._broken: str | None = None
        # the ranks fork from one forkserver per launching process, which reads the wait
        # policy when it starts: the first group started decides it for later groups too
        with passive_waits(self.n_ranks > 1):
            for p in self._procs:
                p.start()
        try:
            self._collect("ready", deadline=time.monotonic() + self.timeout_s + 60.0)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> LocalGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        root_only: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Run ``fn(comm, *args, **kwargs)`` on every rank; results in rank order.

        ``fn`` must be importable (a module-level function); results must pickle.
        ``root_only`` keyword arguments reach rank 0 only (the others get ``None`` for
        each), so large inputs (all the frames) are not copied to every rank.

        Raises:
            RankFailure: a rank raised or died (the group is then closed).
        """
        if self._broken is not None:
            raise RankFailure(f"the local group is closed after an earlier failure: {self._broken}")
        root_only = root_only or {}
        payload = pickle.dumps((fn, args, {**kwargs, **root_only}))
        others = pickle.dumps((fn, args, {**kwargs, **dict.fromkeys(root_only)}))
        for r, q in enumerate(self._tasks):
            q.put(payload if r == 0 else others)
        try:
            return self._collect("ok", deadline=None)
        except BaseException:
            self.close()
            raise

    def _collect(self, kind: str, *, deadline: float | None) -> list[Any]:
        got: dict[int, Any] = {}
        errors: dict[int, str] = {}
        failed_at: float | None = None
        while len(got) + len(errors) < self.n_ranks:
            now = time.monotonic()
            if failed_at is not None and now - failed_at > GRACE_S:
                break
            if deadline is not None and now > deadline:
                errors.setdefault(
                    -1,
                    f"ranks did not start within {self.timeout_s + 60.0:.0f} s (a script that "
                    "starts ranks must guard its top level with `if __name__ == '__main__':`, "
                    "because each rank imports it)",
                )
                break
            try:
                rank, status, data = self._results.get(timeout=0.1)
            except queue.Empty:
                for r, p in enumerate(self._procs):
                    if r not in got and r not in errors and p.exitcode is not None:
                        errors[r] = f"died with exit code {p.exitcode} without reporting"
                        failed_at = failed_at or time.monotonic()
                continue
            if status == "error":
                errors[rank] = data.decode()
                failed_at = failed_at or time.monotonic()
            else:
                got[rank] = pickle.loads(data) if kind == "ok" else None
        if errors:
            by_message: dict[str, list[int]] = {}
            for r, msg in sorted(errors.items()):
                by_message.setdefault(msg, []).append(r)
            lines = [
                f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}: {msg}"
                if rs[0] >= 0
                else msg
                for msg, rs in by_message.items()
            ]
            first = min((r for r in errors if r >= 0), default=-1)
            # the first rank that failed on its own is usually the lowest that did not
            # merely time out waiting for the others
            own = [r for r, m in sorted(errors.items()) if "CommError" not in m and r >= 0]
            culprit = own[0] if own else first
            who = f"rank {culprit}" if culprit >= 0 else "start-up"
            self._broken = f"{who} failed"
            raise RankFailure(
                f"{self.n_ranks}-rank run failed ({who}); every rank was stopped:\n  "
                + "\n  ".join(lines)
            )
        return [got[r] for r in range(self.n_ranks)]

    def close(self) -> None:
        """Stop every rank: politely if idle, by force after a short wait."""
        for q, p in zip(self._tasks, self._procs):
            if p.is_alive():
                try:
                    q.put(None)
                except (OSError, ValueError):
                    pass
        deadline = time.monotonic() + (1.0 if self._broken else 5.0)
        for p in self._procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(timeout=5.0)
            if p.is_alive():
                p.kill()
                p.join(timeout=5.0)
        self._broken = self._broken or "closed"


def launch(
    fn: Callable[..., Any],
    n_ranks: int,
    *args: Any,
    backend: str = "gloo",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    threads_per_rank: int | None = None,
    root_only: dict[str, Any] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Spawn ``n_ranks`` local processes, run ``fn(comm, *args, **kwargs)`` on each, stop.

    Returns:
        One result per rank, in rank order.
    """
    with LocalGroup(
        n_ranks, backend=backend, timeout_s=timeout_s, threads_per_rank=threads_per_rank
    ) as group:
        return group.run(fn, *args, root_only=root_only, **kwargs)
