"""The halo exchange: an autograd function that refreshes halo rows from their owners.

Forward: pack ``x[send[peer]]`` for every peer, post every send and receive at once,
land the received rows in the halo rows. Backward: the adjoint — halo gradients travel
back to their owners and are added into the rows they came from (``index_add_``). The
backward is itself an autograd function whose backward is the forward, so forces inside
a training loss (double backward) are exact too.

Owned rows only: ``exchange(x)`` also takes the ``[n_owned, ...]`` owned rows alone and
returns all ``[n_local, ...]`` rows (its backward then returns the owned rows' gradient), so
a model computes its node-wise layers on owned atoms only and never on halo rows whose
values the exchange would overwrite anyway.

Overlap: ``pending = exchange.start(x)`` posts the forward exchange and returns at once;
the caller computes what needs only the owned rows (a layer's interior edges) while the
rows are in flight, then ``pending.wait()`` returns the local rows. In the backward pass
the adjoint is overlapped the same way: the halo gradients are posted as soon as they are
complete, autograd then runs the backward of the work done between ``start`` and ``wait``
(it was recorded in between, and autograd runs later-recorded nodes first), and the
gradient of ``x`` waits for them last. Under double backward (``create_graph``) the adjoint
is the plain differentiable one, not overlapped.

Memory: the forward receives straight into the halo rows of its (fresh) output, which is
contiguous, so unpacking costs nothing; the send buffer and the backward's receive
buffers are allocated once per plan, dtype and feature width and then reused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from atomshard.comm._group import Communicator, Pending
from atomshard.comm._profile import ExchangeProfiler
from atomshard.errors import InputError
from atomshard.partition import HaloPlan

#: Transports: ``"p2p"`` (batch_isend_irecv to neighbours only), ``"all_to_all"`` (one
#: all_to_all_single over every rank), ``"auto"`` (the faster one measured per backend).
TRANSPORTS = ("auto", "p2p", "all_to_all")

#: What ``"auto"`` picks, per backend. On gloo one all_to_all_single beat
#: batch_isend_irecv at every width and world size measured (benchmarks/bench_exchange.py,
#: docs/performance.md): gloo runs each isend/irecv as a separate task, all_to_all as one.
#: NCCL groups point-to-point calls into one launch and only talks to neighbours, so it
#: keeps p2p until measured otherwise.
AUTO_TRANSPORT = {"gloo": "all_to_all", "nccl": "p2p", "none": "p2p"}


@dataclass
class _Routes:
    """Index tensors of one plan on one device, ordered by peer."""

    n_owned: int
    n_local: int
    peers: list[int]
    send_idx: dict[int, torch.Tensor]
    recv_range: dict[int, tuple[int, int]]
    send_all: torch.Tensor  # concatenation of send_idx in peer order
    buffers: dict[tuple[Any, ...], Any] = field(default_factory=dict)


def _as_index(rows: Any, device: torch.device) -> torch.Tensor:
    if isinstance(rows, range):
        return torch.arange(rows.start, rows.stop, rows.step, dtype=torch.int64, device=device)
    return torch.as_tensor(rows, dtype=torch.int64, device=device).reshape(-1)


def _routes(plan: HaloPlan, world_size: int, device: torch.device) -> _Routes:
    n_owned, n_local = int(plan.n_owned), int(plan.n_local)
    peers = sorted(set(plan.send) | set(plan.recv))
    send_idx: dict[int, torch.Tensor] = {}
    recv_range: dict[int, tuple[int, int]] = {}
    next_row = n_owned
    for peer in peers:
        if not 0 <= peer < world_size or peer == plan.rank:
            raise InputError(f"halo plan of rank {plan.rank} names invalid peer {peer}")
        idx = _as_index(plan.send.get(peer, []), device)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_owned):
            raise InputError(f"halo plan of rank {plan.rank}: send rows to {peer} not owned")
        send_idx[peer] = idx
        rows = _as_index(plan.recv.get(peer, []), device)
        start = int(rows[0]) if rows.numel() else next_row
        stop = start + int(rows.numel())
        expected = torch.arange(start, stop, dtype=torch.int64, device=device)
        if start != next_row or not torch.equal(rows, expected):
            raise InputError(
                f"halo plan of rank {plan.rank}: rows received from {peer} must be the "
                f"contiguous range starting at {next_row} (halo grouped by peer, ascending)"
            )
        recv_range[peer] = (start, stop)
        next_row = stop
    if next_row != n_local:
        raise InputError(
            f"halo plan of rank {plan.rank}: halo rows {n_owned}..{next_row} do not fill "
            f"the {n_local} local rows"
        )
    send_all = (
        torch.cat([send_idx[p] for p in peers])
        if peers
        else torch.zeros(0, dtype=torch.int64, device=device)
    )
    return _Routes(n_owned, n_local, peers, send_idx, recv_range, send_all)


class HaloExchange:
    """``exchange(x)`` for one rank's halo plan: differentiable, buffers reused.

    Args:
        plan: this rank's halo plan (owned rows first, then halo rows grouped by peer).
        comm: the communicator (a :class:`NullCommunicator` when serial).
        transport: ``"p2p"``, ``"all_to_all"`` or ``"auto"`` (see :data:`AUTO_TRANSPORT`).
        profiler: records pack / send-recv / unpack times per call when given.

    Shapes:
        x: ``[n_local, ...]`` or ``[n_owned, ...]`` (owned rows only), any float dtype;
        returns ``[n_local, ...]`` with the halo rows replaced by their owners' rows.
    """

    def __init__(
        self,
        plan: HaloPlan,
        comm: Communicator,
        *,
        transport: str = "auto",
        profiler: ExchangeProfiler | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise InputError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        if transport == "auto":
            transport = AUTO_TRANSPORT.get(comm.backend, "p2p")
        self.transport = transport
        self.comm = comm
        self.profiler = profiler
        self.rank = int(plan.rank)
        self.routes = _routes(plan, comm.world_size, comm.device)
        self._splits_send = [0] * comm.world_size
        self._splits_recv = [0] * comm.world_size
        for peer in self.routes.peers:
            self._splits_send[peer] = int(self.routes.send_idx[peer].numel())
            start, stop = self.routes.recv_range[peer]
            self._splits_recv[peer] = stop - start

    @property
    def n_owned(self) -> int:
        return self.routes.n_owned

    @property
    def n_local(self) -> int:
        return self.routes.n_local

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.comm.world_size == 1:
            return x
        out = _HaloForward.apply(x, self)
        assert isinstance(out, torch.Tensor)
        return out

    def start(self, x: torch.Tensor) -> PendingExchange:
        """Post ``exchange(x)`` and return before the rows arrive (differentiable).

        ``x``: ``[n_local, ...]`` or ``[n_owned, ...]``, as for a call. Compute with ``x``'s
        owned rows meanwhile; ``.wait()`` then returns what ``exchange(x)`` would. Every
        started exchange must be waited for, on every rank, in the same order.
        """
        return PendingExchange(self, x)

    # -- buffers ------------------------------------------------------------------------
    def _buffer(self, key: tuple[Any, ...], shape: Sequence[int], dtype: torch.dtype) -> Any:
        buf = self.routes.buffers.get(key)
        if buf is None:
            buf = torch.empty(tuple(shape), dtype=dtype, device=self.comm.device)
            self.routes.buffers[key] = buf
        return buf

    def _check(self, x: torch.Tensor, rows: tuple[int, ...]) -> tuple[torch.Tensor, int]:
        if x.shape[0] not in rows:
            raise InputError(
                f"exchange on rank {self.rank}: tensor has {x.shape[0]} rows, the halo plan "
                f"has {self.n_local} local rows ({self.n_owned} owned)"
            )
        width = math.prod(x.shape[1:])
        return x.reshape(x.shape[0], width), width

    # -- the two linear maps ------------------------------------------------------------
    def forward_exchange(self, x: torch.Tensor) -> torch.Tensor:
        """All local rows: ``x``'s owned rows, then the halo rows from their owners (no
        autograd). ``x`` holds all local rows (its halo rows are ignored) or the owned ones."""
        flat, width = self._check(x, (self.n_local, self.n_owned))
        r = self.routes
        t0 = time.perf_counter()
        out = torch.empty((r.n_local, width), dtype=flat.dtype, device=flat.device)
        out[: r.n_owned] = flat[: r.n_owned]
        send = self._buffer(("send", flat.dtype, width), (r.send_all.numel(), width), flat.dtype)
        torch.index_select(flat, 0, r.send_all, out=send)
        self._sync()
        t1 = time.perf_counter()
        self._post_rows(send, out).wait()
        self._sync()
        t2 = time.perf_counter()
        if self.profiler is not None:
            nbytes = send.numel() * send.element_size()
            self.profiler.record("forward", width, t1 - t0, t2 - t1, 0.0, nbytes)
        return out.view(r.n_local, *x.shape[1:])

    def post_forward(self, x: torch.Tensor) -> _InFlight:
        """The first half of :meth:`forward_exchange`: pack, post, copy the owned rows."""
        flat, width = self._check(x, (self.n_local, self.n_owned))
        r = self.routes
        t0 = time.perf_counter()
        out = torch.empty((r.n_local, width), dtype=flat.dtype, device=flat.device)
        send = self._buffer(("send", flat.dtype, width), (r.send_all.numel(), width), flat.dtype)
        torch.index_select(flat, 0, r.send_all, out=send)
        t1 = time.perf_counter()
        pending = self._post_rows(send, out)
        out[: r.n_owned] = flat[: r.n_owned]  # while the rows are in flight
        t2 = time.perf_counter()
        nbytes = send.numel() * send.element_size()
        return _InFlight(pending, out, tuple(x.shape[1:]), width, t0, t1 - t0, t2 - t1, nbytes)

    def wait_forward(self, flight: _InFlight) -> torch.Tensor:
        """The second half: wait for the halo rows; ``[n_local, ...]``."""
        t0 = time.perf_counter()
        flight.pending.wait()
        t1 = time.perf_counter()
        if self.profiler is not None:
            self.profiler.record(
                "forward",
                flight.width,
                flight.pack_s,
                flight.post_s + (t1 - t0),
                0.0,
                flight.nbytes,
                overlapped=True,
                inflight_s=t1 - flight.t_posted,
            )
        return flight.out.view(self.n_local, *flight.shape)

    def post_reverse(self, grad: torch.Tensor, rows: int) -> _InFlight:
        """The first half of :meth:`reverse_exchange`: post the halo gradients home."""
        flat, width = self._check(grad, (self.n_local,))
        flat = flat.contiguous()
        r = self.routes
        t0 = time.perf_counter()
        back = self._buffer(("back", flat.dtype, width), (r.send_all.numel(), width), flat.dtype)
        pending = self._post_grads(flat, back)
        t1 = time.perf_counter()
        nbytes = (flat.shape[0] - r.n_owned) * width * flat.element_size()
        flight = _InFlight(pending, flat, tuple(grad.shape[1:]), width, t0, 0.0, t1 - t0, nbytes)
        flight.back, flight.rows = back, int(rows)
        return flight

    def wait_reverse(self, flight: _InFlight) -> torch.Tensor:
        """The second half: wait, add the returned gradients into the owned rows."""
        r = self.routes
        t0 = time.perf_counter()
        flight.pending.wait()
        t1 = time.perf_counter()
        grad = flight.out
        out = torch.zeros((flight.rows, flight.width), dtype=grad.dtype, device=grad.device)
        out[: r.n_owned] = grad[: r.n_owned]
        assert flight.back is not None
        out.index_add_(0, r.send_all, flight.back)
        t2 = time.perf_counter()
        if self.profiler is not None:
            self.profiler.record(
                "backward",
                flight.width,
                0.0,
                flight.post_s + (t1 - t0),
                t2 - t1,
                flight.nbytes,
                overlapped=True,
                inflight_s=t1 - flight.t_posted,
            )
        return out.view(flight.rows, *flight.shape)

    def _post_rows(self, send: torch.Tensor, out: torch.Tensor) -> Pending:
        """Post the packed rows ``send`` to their peers; the halo rows of ``out`` receive."""
        r = self.routes
        if self.transport == "all_to_all":
            # halo rows are grouped by peer in rank order: receive straight into them
            return self.comm.start_all_to_all(
                out[r.n_owned :], send, self._splits_recv, self._splits_send, what="halo exchange"
            )
        packed, halo = self._per_peer(send, out)
        return self.comm.start_p2p(packed, halo, what="halo exchange")

    def _post_grads(self, grad: torch.Tensor, back: torch.Tensor) -> Pending:
        """Post the halo rows of ``grad`` home; the packed buffer ``back`` receives."""
        r = self.routes
        if self.transport == "all_to_all":
            return self.comm.start_all_to_all(
                back, grad[r.n_owned :], self._splits_send, self._splits_recv, what="halo backward"
            )
        packed, halo = self._per_peer(back, grad)
        return self.comm.start_p2p(halo, packed, what="halo backward")

    def _per_peer(
        self, packed: torch.Tensor, local: torch.Tensor
    ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """Views of the packed send-order buffer and of the halo rows, one per peer.

        Forward sends the packed views and receives into the halo views; backward does the
        reverse. Peers with nothing to move in a direction are left out of that dict.
        """
        r = self.routes
        by_peer_packed, by_peer_halo, offset = {}, {}, 0
        for peer in r.peers:
            n = self._splits_send[peer]
            if n:
                by_peer_packed[peer] = packed[offset : offset + n]
            offset += n
            start, stop = r.recv_range[peer]
            if stop > start:
                by_peer_halo[peer] = local[start:stop]
        return by_peer_packed, by_peer_halo

    def reverse_exchange(self, grad: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """Adjoint of :meth:`forward_exchange`: halo rows sent home and added (no autograd).

        ``rows`` is the row count of the forward's input (``n_local`` by default, or
        ``n_owned``): the result has that many rows (halo rows of a full result are zero).
        """
        flat, width = self._check(grad, (self.n_local,))
        flat = flat.contiguous()
        r = self.routes
        t0 = time.perf_counter()
        back = self._buffer(("back", flat.dtype, width), (r.send_all.numel(), width), flat.dtype)
        self._sync()
        t1 = time.perf_counter()
        self._post_grads(flat, back).wait()
        self._sync()
        t2 = time.perf_counter()
        n_rows = r.n_local if rows is None else int(rows)
        out = torch.zeros((n_rows, width), dtype=flat.dtype, device=flat.device)
        out[: r.n_owned] = flat[: r.n_owned]
        out.index_add_(0, r.send_all, back)
        self._sync()
        t3 = time.perf_counter()
        if self.profiler is not None:
            nbytes = (flat.shape[0] - r.n_owned) * width * flat.element_size()
            self.profiler.record("backward", width, t1 - t0, t2 - t1, t3 - t2, nbytes)
        return out.view(n_rows, *grad.shape[1:])

    def _sync(self) -> None:
        if self.profiler is not None and self.comm.device.type == "cuda":
            torch.cuda.synchronize(self.comm.device)


class _InFlight:
    """One posted exchange: its pending operations, buffers and timings so far."""

    __slots__ = (
        "back",
        "nbytes",
        "out",
        "pack_s",
        "pending",
        "post_s",
        "rows",
        "shape",
        "t_posted",
        "width",
    )

    def __init__(
        self,
        pending: Pending,
        out: torch.Tensor,
        shape: tuple[int, ...],
        width: int,
        t0: float,
        pack_s: float,
        post_s: float,
        nbytes: int,
    ) -> None:
        self.pending = pending
        self.out = out  # forward: the local rows being filled; reverse: the gradient sent
        self.shape = shape
        self.width = width
        self.t_posted = t0 + pack_s
        self.pack_s = pack_s
        self.post_s = post_s
        self.nbytes = nbytes
        self.back: torch.Tensor | None = None
        self.rows = 0


class _Link:
    """What ``_Start`` and ``_Finish`` share: the exchange and the posted operations.

    Their contexts hold this, not the :class:`PendingExchange`, which holds ``wait()``'s
    output: a context referring to it would close a reference cycle through the output's
    ``grad_fn``, and every evaluation's autograd graph would then live until Python's
    cyclic collector ran, and resident memory would grow step after step.
    """

    __slots__ = ("ex", "flight", "reverse")

    def __init__(self, ex: HaloExchange) -> None:
        self.ex = ex
        self.flight: _InFlight | None = None
        self.reverse: _InFlight | None = None


class PendingExchange:
    """A started halo exchange (:meth:`HaloExchange.start`); :meth:`wait` returns its rows.

    Autograd sees two functions: ``_Start`` (posts; its backward waits for the adjoint and
    returns the gradient of ``x``) and ``_Finish`` (waits; its backward posts the halo
    gradients). The work recorded between them runs, in the backward pass, between the
    posting and the waiting of the adjoint.
    """

    def __init__(self, ex: HaloExchange, x: torch.Tensor) -> None:
        self.ex = ex
        self._link = _Link(ex)
        self._out: torch.Tensor | None = None
        if ex.comm.world_size == 1:
            self._out = x
            self._token = None
        else:
            token = _Start.apply(x, self._link)
            assert isinstance(token, torch.Tensor)
            self._token = token

    def wait(self) -> torch.Tensor:
        """``[n_local, ...]``: the owned rows of ``x``, then the halo rows from their owners."""
        if self._out is None:
            out = _Finish.apply(self._token, self._link)
            assert isinstance(out, torch.Tensor)
            self._out, self._token = out, None
        return self._out


class _Start(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, link: _Link) -> torch.Tensor:
        ctx.link = link
        link.flight = link.ex.post_forward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        link = ctx.link
        flight, link.reverse = link.reverse, None
        if flight is None:  # double backward: _Finish's backward already did the adjoint
            return grad, None
        return link.ex.wait_reverse(flight), None


class _Finish(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, token: torch.Tensor, link: _Link) -> torch.Tensor:
        ctx.link = link
        ctx.rows = token.shape[0]
        flight, link.flight = link.flight, None
        assert flight is not None, "wait() on an exchange that was not started"
        return link.ex.wait_forward(flight)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        link = ctx.link
        if torch.is_grad_enabled():  # create_graph: the differentiable, blocking adjoint
            out = _HaloReverse.apply(grad, link.ex, ctx.rows)
            assert isinstance(out, torch.Tensor)
            return out, None
        link.reverse = link.ex.post_reverse(grad, ctx.rows)
        # _Start's backward returns the real gradient once the adjoint has arrived
        zero = grad.new_zeros(())
        return zero.expand(ctx.rows, *grad.shape[1:]), None


class _HaloForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, ex: HaloExchange) -> torch.Tensor:
        ctx.ex = ex
        ctx.rows = x.shape[0]
        return ex.forward_exchange(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = _HaloReverse.apply(grad, ctx.ex, ctx.rows)
        assert isinstance(out, torch.Tensor)
        return out, None


class _HaloReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, grad: torch.Tensor, ex: HaloExchange, rows: int) -> torch.Tensor:
        ctx.ex = ex
        return ex.reverse_exchange(grad, rows)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        out = _HaloForward.apply(grad, ctx.ex)
        assert isinstance(out, torch.Tensor)
        return out, None, None
