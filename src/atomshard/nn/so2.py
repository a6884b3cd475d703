"""SO(2)-equivariant linear layers on features expressed in an edge frame.

With features rotated so that the edge lies along e3nn's polar axis (+y, see
:func:`atomshard.nn.wigner.edge_frame_rotation`), a rotation by ``θ`` about the edge
multiplies ``z_m = x_{l,-m} + i x_{l,+m}`` by ``exp(-i m θ)`` for every ``l``. Any
complex-linear map of the ``z_m`` of all ``l >= m`` commutes with that, so one linear layer
per order ``m`` -- mixing degrees ``l`` and channels -- is SO(2)-equivariant:

``out_{-m} = W1 x_{-m} - W2 x_{+m}``, ``out_{+m} = W2 x_{-m} + W1 x_{+m}`` (``m > 0``),
and a plain linear layer (with bias) on the ``m = 0`` components.

This is the eSCN trick (Passaro & Zitnick, 2023) used by the Hamiltonian seed: the
``O(L^6)`` tensor product becomes ``O(L^3)`` per edge.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SO2Linear", "m_major_indices"]


def m_major_indices(l_max: int, m: int) -> tuple[list[int], list[int]]:
    """Flat ``(l, m)`` positions of orders ``-m`` and ``+m`` for ``l = |m|..l_max``.

    The flat index of ``(l, m)`` is ``l*l + l + m`` (e3nn's layout).
    """
    minus = [l * l + l - m for l in range(m, l_max + 1)]
    plus = [l * l + l + m for l in range(m, l_max + 1)]
    return minus, plus


class SO2Linear(nn.Module):
    """Per-order linear layers mixing ``l`` and channels, in an edge frame.

    Args:
        l_max: highest degree of input and output
        in_channels, out_channels: channels per ``(l, m)`` component

    Shapes:
        x: ``[n_edges, (l_max+1)**2, in_channels]`` (edge frame)
        returns: ``[n_edges, (l_max+1)**2, out_channels]`` (edge frame)
    """

    def __init__(self, l_max: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.l_max = l_max
        self.in_channels = in_channels
        self.out_channels = out_channels
        n0 = l_max + 1
        self.linear_m0 = nn.Linear(n0 * in_channels, n0 * out_channels)
        self.real = nn.ModuleList()
        self.imag = nn.ModuleList()
        for m in range(1, l_max + 1):
            n = l_max - m + 1
            self.real.append(nn.Linear(n * in_channels, n * out_channels, bias=False))
            self.imag.append(nn.Linear(n * in_channels, n * out_channels, bias=False))
        for m in range(0, l_max + 1):
            minus, plus = m_major_indices(l_max, m)
            self.register_buffer(f"minus_{m}", torch.tensor(minus), persistent=False)
            self.register_buffer(f"plus_{m}", torch.tensor(plus), persistent=False)
        # Keep the output scale comparable to the input's whatever l_max and channels.
        for lin in [self.linear_m0, *self.real, *self.imag]:
            nn.init.normal_(lin.weight, std=1.0 / math.sqrt(lin.in_features))
        nn.init.zeros_(self.linear_m0.bias)
        for lin in [*self.real, *self.imag]:
            lin.weight.data.mul_(1.0 / math.sqrt(2.0))

    def _index(self, kind: str, m: int) -> torch.Tensor:
        idx = getattr(self, f"{kind}_{m}")
        assert isinstance(idx, torch.Tensor)
        return idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_edges = x.shape[0]
        size = (self.l_max + 1) ** 2
        out = x.new_zeros(n_edges, size, self.out_channels)
        idx0 = self._index("plus", 0)
        y0 = self.linear_m0(x.index_select(1, idx0).flatten(1))
        out = out.index_copy(1, idx0, y0.unflatten(1, (-1, self.out_channels)))
        for m in range(1, self.l_max + 1):
            im, ip = self._index("minus", m), self._index("plus", m)
            xm = x.index_select(1, im).flatten(1)
            xp = x.index_select(1, ip).flatten(1)
            w1, w2 = self.real[m - 1], self.imag[m - 1]
            ym = (w1(xm) - w2(xp)).unflatten(1, (-1, self.out_channels))
            yp = (w2(xm) + w1(xp)).unflatten(1, (-1, self.out_channels))
            out = out.index_copy(1, im, ym).index_copy(1, ip, yp)
        return out
