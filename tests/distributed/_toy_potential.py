"""Small message-passing potentials for the distributed tests (not part of the package).

``ToyMPNN`` calls ``exchange`` before each of its layers, is nonlinear in the edge
vectors and mixes features over several hops, so a wrong halo, a missing remote force
contribution or a misplaced image shift shows up in energies, forces and stress.
``ToyLocal`` is strictly local (one layer, ``needs_feature_exchange = False``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from atomshard.models.base import Exchange, Potential


def _radial(edge_vec: torch.Tensor, cutoff: float, n_basis: int) -> torch.Tensor:
    r = torch.linalg.vector_norm(edge_vec, dim=1, keepdim=True)
    k = torch.arange(1, n_basis + 1, dtype=edge_vec.dtype, device=edge_vec.device)
    envelope = 0.5 * (torch.cos(math.pi * r / cutoff) + 1.0)
    return torch.sin(k * math.pi * r / cutoff) / r * envelope  # [n_edges, n_basis]


class ToyMPNN(Potential):
    def __init__(self, cutoff: float = 3.0, width: int = 6, n_layers: int = 3, seed: int = 0):
        super().__init__()
        self.cutoff = float(cutoff)
        self.atomic_numbers = (1, 8, 14)
        gen = torch.Generator().manual_seed(seed)

        def p(*shape: int, scale: float = 0.5) -> nn.Parameter:
            return nn.Parameter(scale * torch.randn(*shape, generator=gen, dtype=torch.float64))

        self.embed = p(len(self.atomic_numbers), width, scale=1.0)
        self.weights = nn.ParameterList([p(width, width) for _ in range(n_layers)])
        self.radial = nn.ParameterList([p(4, width) for _ in range(n_layers)])
        self.readout = p(width)
        lookup = torch.full((max(self.atomic_numbers) + 1,), -1, dtype=torch.int64)
        lookup[list(self.atomic_numbers)] = torch.arange(len(self.atomic_numbers))
        self.register_buffer("lookup", lookup)

    def atomic_energies(self, graph, edge_vec: torch.Tensor, exchange: Exchange) -> torch.Tensor:
        radial = _radial(edge_vec, self.cutoff, 4)
        h = self.embed[self.lookup[graph.species]]
        for w, rw in zip(self.weights, self.radial):
            h = exchange(h)
            msg = (h[graph.src] @ w) * (radial @ rw)
            agg = torch.zeros_like(h).index_add(0, graph.dst, msg)
            h = h + torch.tanh(agg)
        return torch.tanh(h) @ self.readout + 0.1 * h.pow(2).sum(dim=1)


class ToyLocal(Potential):
    needs_feature_exchange = False

    def __init__(self, cutoff: float = 3.0, seed: int = 1):
        super().__init__()
        self.cutoff = float(cutoff)
        self.atomic_numbers = (1, 8, 14)
        gen = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(4, 5, generator=gen, dtype=torch.float64))
        self.v = nn.Parameter(torch.randn(5, generator=gen, dtype=torch.float64))

    def atomic_energies(self, graph, edge_vec: torch.Tensor, exchange: Exchange) -> torch.Tensor:
        g = _radial(edge_vec, self.cutoff, 4)
        desc = torch.zeros(graph.n_atoms, 4, dtype=g.dtype).index_add(0, graph.dst, g)
        return torch.tanh(desc @ self.w) @ self.v
