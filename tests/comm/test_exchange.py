"""The halo exchange across 2 and 3 real processes (gloo): values, gradcheck, transports."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from atomshard.comm import HaloExchange, LocalGroup, NullCommunicator
from atomshard.graph import neighbor_list
from atomshard.partition import build_halo_plans

pytestmark = pytest.mark.distributed


def _graph(n_atoms: int = 10, seed: int = 3):
    rng = np.random.default_rng(seed)
    cell = np.diag([5.0, 5.5, 6.0])
    pos = rng.uniform(0, 1, (n_atoms, 3)) @ cell
    src, dst, shifts = neighbor_list(pos, cell, np.array([True, True, True]), cutoff=2.8)
    return pos, src, dst, shifts


def _mix(z: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """A nonlinear local layer: every atom adds sin() of its sources' rows."""
    out = z.clone()
    return out.index_add(0, dst, torch.sin(z[src]) * 0.7)


class _SumOverRanks(torch.autograd.Function):
    """Forward: all-reduce sum; backward: identity (the upstream grad is replicated)."""

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return comm.all_reduce_sum(x)

    @staticmethod
    def backward(ctx, g):
        return _Replicate.apply(g, ctx.comm), None


class _Replicate(torch.autograd.Function):
    """Forward: identity (every rank holds the same input); backward: all-reduce sum."""

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return _SumOverRanks.apply(g, ctx.comm), None


class _Probe(torch.autograd.Function):
    """Identity; its backward notes whether the adjoint of ``pending`` is in flight then."""

    @staticmethod
    def forward(ctx, x, pending, seen):
        ctx.pending, ctx.seen = pending, seen
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        ctx.seen.append(ctx.pending._link.reverse is not None)
        return g, None, None


def _backward_overlaps(ex, plan, lsrc, ldst, x_local) -> bool:
    """Work recorded between ``start`` and ``wait`` runs its backward while the halo
    gradients are in flight (posted by the wait's backward, waited for by the start's)."""
    x = x_local.clone().requires_grad_(True)
    a = torch.tanh(x[: plan.n_owned])
    pending = ex.start(a)
    seen: list[bool] = []
    inner = _Probe.apply(torch.sin(a), pending, seen)
    z = _mix(pending.wait(), lsrc, ldst)[: plan.n_owned]
    (z.sum() + inner.sum()).backward()
    return seen == [True]


def _freed_without_gc(ex, plan, lsrc, ldst, x_local) -> bool:
    """A started-and-waited exchange is freed by reference counting once its result and the
    graph are dropped: no reference cycle keeps an evaluation's autograd graph alive until
    Python's cyclic collector runs (that cost ~100 MiB of RSS per MD step)."""
    gc.disable()
    try:
        x = x_local.clone().requires_grad_(True)
        pending = ex.start(torch.tanh(x[: plan.n_owned]))
        out = _mix(pending.wait(), lsrc, ldst)[: plan.n_owned]
        out.sum().backward()
        ref, graph_ref = weakref.ref(pending), weakref.ref(out)
        del pending, out
        return ref() is None and graph_ref() is None
    finally:
        gc.enable()


def _case(comm, part_list, transport: str, width: int) -> dict:
    """Runs on every rank: exchange values, gradcheck, gradgradcheck, serial comparison."""
    pos, src, dst, shifts = _graph()
    n = len(pos)
    part = np.asarray(part_list)
    plans = build_halo_plans(src, dst, shifts, n, part, comm.world_size)
    plan = plans[comm.rank]
    ex = HaloExchange(plan, comm, transport=transport)
    l2g = torch.as_tensor(plan.local_to_global)
    lsrc, ldst = torch.as_tensor(plan.src), torch.as_tensor(plan.dst)
    owned = l2g[: plan.n_owned]
    gen = torch.Generator().manual_seed(11)
    x_global = torch.randn(n, width, dtype=torch.float64, generator=gen)

    # forward values: halo rows come from their owners even if they start as garbage
    local = x_global[l2g].clone()
    local[plan.n_owned :] = 1e9
    out = ex(local)
    values_ok = bool(torch.equal(out, x_global[l2g]))
    # the owned rows alone in, all local rows out
    values_ok &= bool(torch.equal(ex(local[: plan.n_owned]), x_global[l2g]))

    def f_rank(xg: torch.Tensor) -> torch.Tensor:
        z = ex(xg[l2g])
        z = _mix(z, lsrc, ldst)
        # second layer: exchange of a nonlinear feature, given the owned rows only (its
        # backward returns their gradient alone)
        z = ex(torch.tanh(z)[: plan.n_owned])
        z = _mix(z, lsrc, ldst)
        y = torch.zeros(n, width, dtype=z.dtype)
        return y.index_copy(0, owned, z[: plan.n_owned])

    def f_rank_overlap(xg: torch.Tensor) -> torch.Tensor:
        # the second exchange overlapped: posted, work on the owned rows while the halo
        # rows are in flight, then waited for (the backward overlaps the adjoint likewise)
        z = _mix(ex(xg[l2g]), lsrc, ldst)
        a = torch.tanh(z)[: plan.n_owned]
        pending = ex.start(a)
        inner = 0.3 * torch.sin(a)
        z = _mix(pending.wait(), lsrc, ldst)[: plan.n_owned] + inner
        y = torch.zeros(n, width, dtype=z.dtype)
        return y.index_copy(0, owned, z)

    def f(xg: torch.Tensor, rank_fn=f_rank) -> torch.Tensor:
        # the global function sum_r f_r(x): gradcheck then sees the same Jacobian on
        # every rank, and each rank's backward needs its peers' halo gradients
        return _SumOverRanks.apply(rank_fn(_Replicate.apply(xg, comm)), comm)

    def f_overlap(xg: torch.Tensor) -> torch.Tensor:
        return f(xg, f_rank_overlap)

    # sum over ranks of f equals the serial two-layer computation
    y = comm.all_reduce_sum(f_rank(x_global))
    s = torch.as_tensor(src)
    d = torch.as_tensor(dst)
    serial = _mix(torch.tanh(_mix(x_global, s, d)), s, d)
    serial_ok = bool(torch.allclose(y, serial, rtol=1e-13, atol=1e-13))
    y = comm.all_reduce_sum(f_rank_overlap(x_global))
    first = torch.tanh(_mix(x_global, s, d))
    serial_ok &= bool(torch.allclose(y, _mix(first, s, d) + 0.3 * torch.sin(first), 1e-13, 1e-13))

    xg = x_global.clone().requires_grad_(True)
    grad_ok = torch.autograd.gradcheck(f, (xg,), eps=1e-6, atol=1e-8, raise_exception=False)
    grad_ok &= torch.autograd.gradcheck(
        f_overlap, (xg,), eps=1e-6, atol=1e-8, raise_exception=False
    )
    gradgrad_ok = True
    if width == 1:  # double backward (forces inside a loss) through the adjoint exchange
        for fn in (f, f_overlap):
            gradgrad_ok &= torch.autograd.gradgradcheck(
                fn, (xg,), eps=1e-6, atol=1e-7, raise_exception=False
            )
    return {
        "values": values_ok,
        "serial": serial_ok,
        "overlap_order": _backward_overlaps(ex, plan, lsrc, ldst, x_global[l2g]),
        "no_cycle": _freed_without_gc(ex, plan, lsrc, ldst, x_global[l2g]),
        "grad": grad_ok,
        "gradgrad": gradgrad_ok,
        "n_peers": len(plan.peers),
    }


@pytest.fixture(scope="module")
def group2():
    with LocalGroup(2, timeout_s=30, threads_per_rank=1) as g:
        yield g


@pytest.fixture(scope="module")
def group3():
    with LocalGroup(3, timeout_s=30, threads_per_rank=1) as g:
        yield g


def _check(results):
    for r, res in enumerate(results):
        assert res["values"], f"rank {r}: halo rows differ from their owners"
        assert res["serial"], f"rank {r}: two layers differ from serial"
        assert res["grad"], f"rank {r}: gradcheck failed"
        assert res["gradgrad"], f"rank {r}: gradgradcheck failed"
        assert res["overlap_order"], f"rank {r}: the adjoint was not in flight during backward"
        assert res["no_cycle"], f"rank {r}: a started exchange lives on in a reference cycle"


@pytest.mark.parametrize("transport", ["p2p", "all_to_all"])
def test_exchange_two_ranks(group2, transport):
    pos = _graph()[0]
    part = (pos[:, 0] > 2.5).astype(int).tolist()
    results = group2.run(_case, part, transport, 2)
    _check(results)
    assert all(r["n_peers"] == 1 for r in results)
    _check(group2.run(_case, part, transport, 1))


@pytest.mark.parametrize("transport", ["p2p", "all_to_all"])
def test_exchange_three_ranks_random_partition(group3, transport):
    part = np.random.default_rng(5).integers(0, 3, 10).tolist()
    _check(group3.run(_case, part, transport, 3))


def test_exchange_three_ranks_one_empty(group3):
    pos = _graph()[0]
    part = np.where(pos[:, 1] > 2.7, 2, 0).tolist()  # rank 1 owns nothing
    results = group3.run(_case, part, "auto", 2)
    _check(results)
    assert results[1]["n_peers"] == 0


def test_serial_exchange_is_identity():
    pos, src, dst, shifts = _graph()
    plan = build_halo_plans(src, dst, shifts, len(pos), np.zeros(len(pos), int), 1)[0]
    ex = HaloExchange(plan, NullCommunicator())
    x = torch.randn(len(pos), 4)
    assert ex(x) is x
    assert ex.start(x).wait() is x
