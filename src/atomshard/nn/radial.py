"""Radial building blocks: Bessel basis, smooth cutoffs and the radial MLP.

Every function of the edge length here returns exactly zero at and beyond the cutoff,
whatever its formula gives there, so an edge that reaches the cutoff contributes nothing
(energy and forces stay continuous as atoms cross it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from atomshard.nn.activations import silu

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": silu,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "ssp": lambda x: torch.nn.functional.softplus(x) - math.log(2.0),
}
"""Activation functions known by name in configs (``ssp`` is the shifted softplus)."""


class BesselBasis(nn.Module):
    """Radial Bessel functions ``(2 / r_c) sin(w_n r) / r`` with ``w_n = n π / r_c``.

    The frequencies ``w_n`` are a trainable parameter or a fixed buffer; either way they
    are kept in float64 and the basis is evaluated in the dtype of ``r``.

    Args:
        cutoff: ``r_c`` in Å.
        n_basis: number of functions.
        trainable: whether the frequencies are learnt (SevenNet does).
    """

    def __init__(self, cutoff: float, n_basis: int = 8, *, trainable: bool = True) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.n_basis = int(n_basis)
        self.prefactor = 2.0 / self.cutoff
        freqs = torch.arange(1, n_basis + 1, dtype=torch.float64) * (math.pi / self.cutoff)
        if trainable:
            self.frequencies = nn.Parameter(freqs)
        else:
            self.register_buffer("frequencies", freqs)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Evaluate the basis.

        Shapes:
            r: ``[n_edges]`` Å (positive)
            returns: ``[n_edges, n_basis]``, dtype of ``r``
        """
        w = self.frequencies.to(r.dtype)
        ur = r.unsqueeze(-1)
        return self.prefactor * torch.sin(w * ur) / ur


class PolynomialCutoff(nn.Module):
    """The DimeNet polynomial envelope of degree ``p`` (smooth to order ``p``).

    ``f(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, ``x = r / r_c``,
    and ``f = 0`` for ``r >= r_c``.
    """

    def __init__(self, cutoff: float, p: int = 6) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Shapes: ``r: [n_edges]`` Å -> ``[n_edges]``, dtype of ``r``."""
        p = float(self.p)
        x = r / self.cutoff
        c0 = (p + 1.0) * (p + 2.0) / 2.0
        c1 = p * (p + 2.0)
        c2 = p * (p + 1.0) / 2.0
        f = 1.0 - c0 * torch.pow(x, p) + c1 * torch.pow(x, p + 1.0) - c2 * torch.pow(x, p + 2.0)
        return torch.where(r < self.cutoff, f, torch.zeros_like(f))


class XPLORCutoff(nn.Module):
    """The XPLOR switching function: 1 below ``r_on``, a smooth cubic in ``r²`` to 0 at ``r_c``.

    ``f = (r_c² - r²)² (r_c² + 2 r² - 3 r_on²) / (r_c² - r_on²)³`` for ``r_on <= r < r_c``.
    """

    def __init__(self, cutoff: float, r_on: float) -> None:
        super().__init__()
        if not 0.0 <= r_on < cutoff:
            raise ValueError(f"XPLOR cutoff needs 0 <= r_on < cutoff, got r_on={r_on}, {cutoff=}")
        self.cutoff = float(cutoff)
        self.r_on = float(r_on)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Shapes: ``r: [n_edges]`` Å -> ``[n_edges]``, dtype of ``r``."""
        r2 = r * r
        rc2 = self.cutoff * self.cutoff
        ron2 = self.r_on * self.r_on
        switch = (rc2 - r2) ** 2 * (rc2 + 2.0 * r2 - 3.0 * ron2) / (rc2 - ron2) ** 3
        one = torch.ones_like(r)
        f = torch.where(r < self.r_on, one, switch)
        return torch.where(r < self.cutoff, f, torch.zeros_like(f))


class RadialMLP(nn.Module):
    """A bias-free MLP ``x -> act(x W_1 / sqrt(n_1)) ... W_k / sqrt(n_k)``.

    Weights are stored ``[fan_in, fan_out]`` and scaled by ``1/sqrt(fan_in)`` at run time;
    the activation is rescaled to unit second moment under a standard normal input (as
    ``e3nn.nn.FullyConnectedNet`` does, whose weights therefore load unchanged).

    Args:
        sizes: ``[n_in, hidden..., n_out]``.
        activation: a name in :data:`ACTIVATIONS`.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "silu") -> None:
        super().__init__()
        from e3nn.math import normalize2mom

        if len(sizes) < 2:
            raise ValueError(f"RadialMLP needs at least input and output sizes, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        self.sizes = tuple(int(s) for s in sizes)
        self.activation = activation
        self.act = normalize2mom(ACTIVATIONS[activation])
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(a, b)) for a, b in zip(self.sizes, self.sizes[1:])]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``x: [n, sizes[0]]`` -> ``[n, sizes[-1]]``, dtype of the weights."""
        last = len(self.weights) - 1
        for i, w in enumerate(self.weights):
            x = x @ (w / math.sqrt(w.shape[0]))
            if i < last:
                x = self.act(x)
        return x
