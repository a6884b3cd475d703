"""SiLU with a second derivative that keeps two tensors, not five.

``torch.nn.functional.silu`` has a fused first derivative (``silu_backward``), but under
``create_graph`` (a force loss: the forces are ``-dE/dr``, and the loss's gradient goes
through them again) autograd records that derivative as its composite formula,
``g * s * (1 + x (1 - s))`` with ``s = sigmoid(x)``: five elementwise ops, each keeping its
operands for the second backward pass. In the radial MLP of a force-trained potential
that is five ``[n_edges, hidden]`` tensors per activation held from the force pass to the
end of the loss's backward pass, a third of everything the step stores.

:func:`silu` is the same function with a hand-written derivative: the forward is
``torch.nn.functional.silu`` (bitwise the same values), the first derivative the same
fused kernel (bitwise the same gradients where it is not differentiated again), and under
``create_graph`` the first derivative is one node keeping ``(g, x)``, whose derivative::

    d/dg = a s (1 + x (1 - s))              (silu')
    d/dx = a g s (1 - s) (2 + x (1 - 2 s))  (g silu'')

is again made of differentiable torch ops, so higher derivatives still work.
"""

from __future__ import annotations

import torch


class _SiLUGrad(torch.autograd.Function):
    """``g * silu'(x)``: the first derivative of :func:`silu`, a node keeping ``(g, x)``."""

    @staticmethod
    def forward(ctx, g, x):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(g, x)
        return torch.ops.aten.silu_backward(g, x)

    @staticmethod
    def backward(ctx, a):  # type: ignore[no-untyped-def]
        g, x = ctx.saved_tensors
        s = torch.sigmoid(x)
        one_minus = 1.0 - s
        g_g = g_x = None
        if ctx.needs_input_grad[0]:
            g_g = a * (s * (1.0 + x * one_minus))
        if ctx.needs_input_grad[1]:
            g_x = a * g * (s * one_minus * (2.0 + x * (one_minus - s)))
        return g_g, g_x


class _SiLU(torch.autograd.Function):
    """``silu(x)`` whose backward is a :class:`_SiLUGrad`."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(x)
        return torch.nn.functional.silu(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        (x,) = ctx.saved_tensors
        return _SiLUGrad.apply(g, x)


def silu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)`` (see the module docstring for its derivatives)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.nn.functional.silu(x)
    out: torch.Tensor = _SiLU.apply(x)
    return out


class SiLU(torch.nn.Module):
    """:func:`silu` as a module (in place of ``torch.nn.SiLU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return silu(x)
