"""apply_linear: e3nn's Linear without per-block narrows — same outputs and gradients."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from atomshard.nn.linear import apply_linear
from atomshard.testing import grad_fn_names


@pytest.mark.parametrize(
    ("irreps_in", "irreps_out", "biases"),
    [
        ("4x0e+2x1o+3x2e+1x1o", "3x0e+2x1o+2x2e", True),
        ("4x0e+2x1o+3x2e+1x1o", "3x0e+2x1o+2x2e+1x3o", False),  # an output no input reaches
        ("5x0e", "2x0e", True),  # one block
    ],
)
def test_matches_e3nn_linear(irreps_in, irreps_out, biases):
    """Outputs and the gradients of input, weights and biases equal e3nn's to round-off."""
    torch.manual_seed(0)
    lin = o3.Linear(irreps_in, irreps_out, biases=biases).double()
    if biases:
        torch.nn.init.normal_(lin.bias)
    x = torch.randn(9, lin.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    params = [x, lin.weight] + ([lin.bias] if biases else [])
    g = torch.randn(9, lin.irreps_out.dim, dtype=torch.float64)
    ref, ours = lin(x), apply_linear(lin, x)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, rtol=1e-13, atol=1e-13)
    for a, b in zip(torch.autograd.grad(ours, params, g), torch.autograd.grad(ref, params, g)):
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-13)


def test_backward_has_no_slice_nodes():
    """The point of it: no SliceBackward (each of which zero-fills a full-size gradient)."""
    lin = o3.Linear("4x0e+2x1o+3x2e", "3x0e+2x1o+2x2e")
    x = torch.randn(5, lin.irreps_in.dim, requires_grad=True)
    names = grad_fn_names(apply_linear(lin, x))
    assert "SplitBackward0" in names or "SplitWithSizesBackward0" in names
    assert not any(n.startswith("Slice") for n in names), names
