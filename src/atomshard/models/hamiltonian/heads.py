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

__all__ = ["BlockHead", "RadialBaseline", "fit_pair_sum_baseline", "pair_sum_features"]


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

    def blocks(self, coupled: torch.Tensor) -> torch.Tensor:
        """De-normalised coupled vectors ``[n, size]`` (float64) -> orbital blocks."""
        out = coupled @ self.matrix.to(coupled.device).T
        return out.reshape(coupled.shape[0], *self.shape)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.coupled(features).to(torch.float64) * self.scale + self.shift)


class RadialBaseline(nn.Module):
    """A fixed two-centre baseline of an element pair's edge blocks, fitted to the
    training targets: copy ``c`` of degree ``L`` of the coupled vector is
    ``f_c(r) Y_L(r̂)`` (e3nn harmonics, ``component`` normalisation), ``f_c`` a linear
    combination of ``n_radial`` Gaussians of the distance. It is the part of a block that
    depends on the bond alone (a Slater–Koster-like table, equivariant by construction);
    the network then learns only what the environment adds.

    Shapes:
        vectors: ``[n, 3]`` float64 edge vectors; returns ``[n, size]`` float64 coupled
    """

    weights: torch.Tensor

    def __init__(self, irreps: tuple[tuple[int, int], ...], n_radial: int, cutoff: float) -> None:
        super().__init__()
        self.irreps = irreps
        self.n_radial = n_radial
        self.cutoff = float(cutoff)
        n_copies = sum(n for _, n in irreps)
        self.register_buffer("weights", torch.zeros(n_radial, n_copies, dtype=torch.float64))

    def radial(self, r: torch.Tensor) -> torch.Tensor:
        centers = torch.linspace(0.0, self.cutoff, self.n_radial, dtype=r.dtype, device=r.device)
        width = self.cutoff / max(self.n_radial - 1, 1)
        return torch.exp(-(((r[:, None] - centers) / width) ** 2))

    def _harmonics(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        from e3nn import o3

        return [
            o3.spherical_harmonics(big_l, vectors, normalize=True, normalization="component")
            for big_l, _ in self.irreps
        ]

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        vectors = vectors.to(torch.float64)
        f = self.radial(vectors.norm(dim=1)) @ self.weights.to(vectors.device)
        parts, col = [], 0
        for (_, n), y in zip(self.irreps, self._harmonics(vectors), strict=True):
            parts.append((f[:, col : col + n, None] * y[:, None, :]).reshape(len(vectors), -1))
            col += n
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def fit(self, vectors: torch.Tensor, coupled: torch.Tensor, ridge: float = 1e-6) -> None:
        """Least squares of ``f_c(r)`` on the projections ``t · Y_L(r̂) / (2L + 1)``."""
        vectors = vectors.to(torch.float64)
        coupled = coupled.to(torch.float64)
        g = self.radial(vectors.norm(dim=1))  # [n, n_radial]
        proj, col, off = [], 0, 0
        for (big_l, n), y in zip(self.irreps, self._harmonics(vectors), strict=True):
            seg = coupled[:, off : off + n * (2 * big_l + 1)].reshape(len(vectors), n, -1)
            proj.append((seg * y[:, None, :]).sum(-1) / (2 * big_l + 1))
            off += n * (2 * big_l + 1)
            col += n
        p = torch.cat(proj, dim=1)  # [n, n_copies]
        gram = g.T @ g
        gram = gram + ridge * torch.eye(len(gram), dtype=gram.dtype) * gram.diagonal().mean()
        self.weights.copy_(torch.linalg.solve(gram, g.T @ p))


@torch.no_grad()
def fit_pair_sum_baseline(
    baselines: list[RadialBaseline],
    features: list[list[torch.Tensor]],
    targets: torch.Tensor,
    ridge: float = 1e-8,
) -> None:
    """Fit node baselines ``Σ_j f^{Z_j}_c(r_ij) Y_L(r̂_ij)`` (one
    :class:`RadialBaseline` per neighbour element) jointly by least squares.

    ``features[k][e]`` is, for neighbour element ``k`` and irrep ``e`` of the baselines,
    ``Σ_j g_b(r_ij) Y_L(r̂_ij)`` per node, ``[n_nodes, 2L+1, n_radial]``; ``targets`` the
    nodes' coupled vectors ``[n_nodes, size]``. ``L = 0`` copies get a constant column
    (absorbed later by the head's shift, not stored).
    """
    irreps = baselines[0].irreps
    n_nodes = len(targets)
    off = col = 0
    for e, (big_l, n) in enumerate(irreps):
        width = 2 * big_l + 1
        design = torch.cat([f[e].reshape(n_nodes * width, -1) for f in features], dim=1)
        if big_l == 0:
            design = torch.cat([design, torch.ones(n_nodes, 1, dtype=design.dtype)], dim=1)
        gram = design.T @ design
        gram = gram + ridge * torch.eye(len(gram), dtype=gram.dtype) * gram.diagonal().mean()
        for c in range(n):
            y = targets[:, off + c * width : off + (c + 1) * width].reshape(-1)
            w = torch.linalg.solve(gram, design.T @ y)
            for k, base in enumerate(baselines):
                base.weights[:, col + c] = w[k * base.n_radial : (k + 1) * base.n_radial]
        off += n * width
        col += n


def pair_sum_features(
    baseline: RadialBaseline, vectors: torch.Tensor, dst: torch.Tensor, n_nodes: int
) -> list[torch.Tensor]:
    """Per irrep of ``baseline``: ``Σ_{edges into i} g_b(r) Y_L(r̂)``.

    Shapes:
        returns: one ``[n_nodes, 2L+1, n_radial]`` float64 per irrep
    """
    vectors = vectors.to(torch.float64)
    g = baseline.radial(vectors.norm(dim=1))
    out = []
    for (big_l, _), y in zip(baseline.irreps, baseline._harmonics(vectors), strict=True):
        acc = torch.zeros(n_nodes, 2 * big_l + 1, baseline.n_radial, dtype=torch.float64)
        acc.index_add_(0, dst, y[:, :, None] * g[:, None, :])
        out.append(acc)
    return out
