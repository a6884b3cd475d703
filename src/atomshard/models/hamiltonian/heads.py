"""Readout heads: node or edge embeddings -> orbital blocks, through the coupled basis.

For an element pair ``(Z_i, Z_j)`` the block's coupled vector holds ``n_L`` copies of
each degree ``L`` (:class:`~atomshard.hamiltonian.coupled.PairCoupling`). The head maps
the degree-``L`` slice of an embedding, ``[2L+1, E]``, linearly over channels to
``[2L+1, n_L]`` (a bias only for ``L = 0``), so every copy rotates with ``D_L``. The
coupled vector is de-normalised (``scale * c + shift``; the shift lives on ``L = 0``
entries only) and turned into the orbital block by the inverse Clebsch–Gordan transform,
in float64.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.hamiltonian.coupled import PairCoupling

__all__ = ["BlockHead"]


class BlockHead(nn.Module):
    """Blocks of one element pair from embeddings.

    Shapes:
        features: ``[n, (l_max+1)**2, E]`` (lab frame)
        returns: ``[n, n_orb(Z_i), n_orb(Z_j)]`` float64 (eV)
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, basis: OrbitalBasis, zi: int, zj: int, l_max: int, channels: int) -> None:
        super().__init__()
        self.coupling = PairCoupling.build(basis, zi, zj)
        self.shape = self.coupling.shape
        self.irreps = self.coupling.irreps
        if max(big_l for big_l, _ in self.irreps) > l_max:
            raise ValueError(f"l_max {l_max} too small for the {zi}-{zj} blocks")
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(channels, n) / math.sqrt(channels)) for _, n in self.irreps
        )
        n0 = dict(self.irreps).get(0, 0)
        self.bias = nn.Parameter(torch.zeros(n0))
        # a plain attribute, not a buffer: Module.to(float32) must not round it
        self.matrix = torch.as_tensor(self.coupling.matrix, dtype=torch.float64)
        # output statistics from training data (saved with the weights)
        self.register_buffer("shift", torch.zeros(self.coupling.size, dtype=torch.float64))
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))

    def scalar_positions(self) -> torch.Tensor:
        """Positions of the ``L = 0`` entries in the coupled vector (shift is allowed there)."""
        n0 = dict(self.irreps).get(0, 0)
        return torch.arange(n0)

    def coupled(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised coupled vectors ``[n, size]`` in the body dtype."""
        parts = []
        for (big_l, _n), w in zip(self.irreps, self.weights, strict=True):
            seg = features[:, big_l * big_l : (big_l + 1) ** 2, :]  # [n, 2L+1, E]
            out = seg @ w.to(seg.dtype)  # [n, 2L+1, n_L]
            if big_l == 0:
                out = out + self.bias.to(out.dtype)
            parts.append(out.transpose(1, 2).reshape(features.shape[0], -1))
        return torch.cat(parts, dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        c = self.coupled(features).to(torch.float64) * self.scale + self.shift
        blocks = c @ self.matrix.to(c.device).T
        return blocks.reshape(features.shape[0], *self.shape)
