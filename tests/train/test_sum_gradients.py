"""train.parallel.sum_gradients: the one gradient all-reduce of the potential and the
Hamiltonian trainers (serial and 2 ranks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atomshard.comm import run_on_ranks
from atomshard.train.parallel import sum_gradients


def _sum_on_rank(comm, dtype):
    """Rank r: ``a`` has gradient r + 1, ``b`` a gradient on rank 1 only, ``c`` none."""
    a, b, c = (nn.Parameter(torch.zeros(n)) for n in (3, 2, 1))
    a.grad = torch.full((3,), comm.rank + 1.0)
    if comm.rank == 1:
        b.grad = torch.full((2,), 0.1)
    sum_gradients(comm, [a, b, c], dtype=dtype)
    return [None if p.grad is None else p.grad.clone() for p in (a, b, c)]


@pytest.mark.parametrize("dtype", [None, torch.float64])
def test_serial_keeps_gradients_and_missing_ones(dtype):
    a, b, c = run_on_ranks(_sum_on_rank, 1, dtype)
    assert torch.equal(a, torch.ones(3)) and a.dtype == torch.float32
    assert b is None and c is None


@pytest.mark.distributed
def test_two_ranks_sum_and_a_gradient_no_rank_has_stays_none():
    a, b, c = run_on_ranks(_sum_on_rank, 2, torch.float64, timeout_s=60)
    assert torch.equal(a, torch.full((3,), 3.0)) and a.dtype == torch.float32
    assert torch.equal(b, torch.full((2,), 0.1))  # zeros on rank 0 + rank 1's gradient
    assert c is None
