"""The SiLU with a hand-written second derivative (atomshard.nn.activations): the same
values and first derivatives as torch's, correct second and third derivatives, and a
second derivative that keeps two tensors where torch's composite formula keeps five."""

from __future__ import annotations

import pytest
import torch

from atomshard.nn import RadialMLP
from atomshard.nn.activations import SiLU, silu


def test_values_and_first_derivative_are_torchs_bitwise():
    torch.manual_seed(0)
    x = torch.randn(4096, requires_grad=True)
    assert torch.equal(silu(x), torch.nn.functional.silu(x))
    assert torch.equal(SiLU()(x), torch.nn.functional.silu(x))
    ours = torch.autograd.grad(silu(x).square().sum(), x)[0]
    theirs = torch.autograd.grad(torch.nn.functional.silu(x).square().sum(), x)[0]
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_derivatives_agree_with_finite_differences(order):
    torch.manual_seed(1)
    x = torch.randn(24, dtype=torch.float64, requires_grad=True) * 3.0
    x = x.detach().requires_grad_(True)
    if order == 1:
        assert torch.autograd.gradcheck(silu, (x,))
    elif order == 2:
        assert torch.autograd.gradgradcheck(silu, (x,))
    else:  # the second derivative's own derivatives (a third derivative of silu)

        def first(t):
            return torch.autograd.grad(silu(t).sum(), t, create_graph=True)[0]

        assert torch.autograd.gradgradcheck(first, (x,))


def test_second_derivative_equals_torchs_composite_formula():
    torch.manual_seed(2)
    x = torch.randn(300, dtype=torch.float64, requires_grad=True)
    w = torch.randn(300, dtype=torch.float64)

    def force_loss_grad(act):
        g = torch.autograd.grad((act(x) * w).sum(), x, create_graph=True)[0]
        return torch.autograd.grad((g * g.flip(0)).sum(), x)[0]

    torch.testing.assert_close(
        force_loss_grad(silu), force_loss_grad(torch.nn.functional.silu), rtol=1e-12, atol=1e-14
    )


def _saved_under_create_graph(mlp: RadialMLP, x: torch.Tensor) -> int:
    """Bytes that the first backward of ``mlp`` (``create_graph``) keeps for a second one."""
    out = mlp(x).square().sum()
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.autograd.grad(out, x, create_graph=True)
    return sum(sizes.values())


def test_radial_mlp_force_backward_keeps_two_tensors_per_activation():
    torch.manual_seed(3)
    mlp = RadialMLP([8, 64, 64, 96], "silu")
    x = torch.randn(2000, 8, requires_grad=True)
    kept = _saved_under_create_graph(mlp, x)
    row = 2000 * 64 * 4  # one [n, hidden] float32 tensor
    # counted here (storages the first backward saves, whoever made them): per activation
    # its input x and its incoming gradient g, the matrices' backward its gradients and
    # the activations: 9 rows in all with the hand-written derivative ...
    assert kept <= 9.5 * row, kept / row
    # ... and four more per activation with torch's composite formula (sigmoid(x), and
    # the products and sums of g s (1 + x (1 - s)) kept for their own derivatives)
    mlp.act.f = torch.nn.functional.silu
    assert _saved_under_create_graph(mlp, x) >= kept + 7.5 * row
