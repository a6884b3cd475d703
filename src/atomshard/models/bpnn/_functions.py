"""Scalar building blocks of n2p2 potentials: cutoff functions, compact cores, activations.

All functions are elementwise torch code, differentiable everywhere they are used
(branches are masked with the "double where" so no inf/NaN reaches the gradient).
"""

from __future__ import annotations

import math

import torch

#: ``((e + 1/e) / (e - 1/e))^3``, the normalisation of n2p2's CT_TANH (f(0) = 1).
_TANH_NORM = (1.0 / math.tanh(1.0)) ** 3


def core_poly(x: torch.Tensor, order: int) -> torch.Tensor:
    """n2p2 polynomial core ``p1..p4``: 1 at x = 0, 0 at x = 1, smooth to order ``order``.

    Shapes:
        x: any, values in [0, 1]
    """
    if order == 1:
        return (2.0 * x - 3.0) * x * x + 1.0
    if order == 2:
        return ((15.0 - 6.0 * x) * x - 10.0) * x**3 + 1.0
    if order == 3:
        return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x**4 + 1.0
    if order == 4:
        return (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x**5 + 1.0
    raise ValueError(f"polynomial core order must be 1..4, got {order}")


def cutoff_function(
    r: torch.Tensor, rc: float | torch.Tensor, cutoff_type: int, alpha: float = 0.0
) -> torch.Tensor:
    """n2p2 cutoff function ``f_c(r)`` (zero for ``r >= rc``).

    Types: 0 hard, 1 cos, 2 tanh^3 unnormalised, 3 tanh^3 normalised, 4 exp,
    5-8 polynomials p1-p4. For types 1, 4-8 ``f_c = 1`` below ``alpha * rc`` and the
    function acts on ``x = (r - alpha rc) / (rc - alpha rc)``; types 0, 2, 3 ignore alpha.

    Shapes:
        r: any (lengths in the potential's unit); rc: float or broadcastable tensor
    """
    inside = r < rc
    if cutoff_type == 0:
        return inside.to(r.dtype)
    if cutoff_type in (2, 3):
        t = torch.tanh(1.0 - r / rc)
        value = t * t * t
        if cutoff_type == 3:
            value = value * _TANH_NORM
        return torch.where(inside, value, torch.zeros_like(value))
    rci = alpha * rc
    x = ((r - rci) / (rc - rci)).clamp(min=0.0)
    xs = torch.where(inside, x, torch.zeros_like(x))
    if cutoff_type == 1:
        value = 0.5 * (torch.cos(math.pi * xs) + 1.0)
    elif cutoff_type == 4:
        value = torch.exp(1.0 - 1.0 / (1.0 - xs * xs))
    elif 5 <= cutoff_type <= 8:
        value = core_poly(xs, cutoff_type - 4)
    else:
        raise ValueError(f"cutoff type must be 0..8, got {cutoff_type}")
    return torch.where(inside, value, torch.zeros_like(value))


def compact_function(
    a: torch.Tensor,
    left: float | torch.Tensor,
    right: float | torch.Tensor,
    order: int,
    asymmetric: bool = False,
) -> torch.Tensor:
    """n2p2 compact function ``C(a; left, right)``: core of ``|a - centre| / half-width``.

    Zero outside ``(left, right)``. ``asymmetric`` maps ``x -> (2 - x) x`` before the core
    (n2p2's ``pNa`` subtypes, radial part only).

    Shapes:
        a: any; left, right: floats or broadcastable tensors
    """
    center = 0.5 * (left + right)
    half = 0.5 * (right - left)
    x = (a - center).abs() / half
    inside = x < 1.0
    xs = torch.where(inside, x, torch.zeros_like(x))
    if asymmetric:
        xs = (2.0 - xs) * xs
    value = core_poly(xs, order)
    return torch.where(inside, value, torch.zeros_like(value))


def activation(y: torch.Tensor, letter: str) -> torch.Tensor:
    """n2p2 activation by letter: l t s p r g c S e h (see ``io/n2p2.py``)."""
    if letter == "l":
        return y
    if letter == "t":
        return torch.tanh(y)
    if letter == "s":
        return torch.sigmoid(y)
    if letter == "p":
        # n2p2 evaluates log(1 + exp(x)) and returns x itself above 35.
        big = y > 35.0
        ys = torch.where(big, torch.zeros_like(y), y)
        return torch.where(big, y, torch.log1p(torch.exp(ys)))
    if letter == "r":
        return torch.relu(y)
    if letter == "g":
        return torch.exp(-0.5 * y * y)
    if letter == "c":
        return torch.cos(y)
    if letter == "S":
        return 1.0 - torch.sigmoid(y)
    if letter == "e":
        return torch.exp(-y)
    if letter == "h":
        return y * y
    raise ValueError(f"unknown n2p2 activation {letter!r}")
