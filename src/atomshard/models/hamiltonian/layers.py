"""Building blocks of the SO(2) Hamiltonian network: norms, gates, node and edge updates.

Features are ``[n, S, C]`` with ``S = (l_max+1)**2`` flattened ``(l, m)`` in e3nn's order
and ``C`` channels. Every map here is SO(3)-equivariant when the features are in the lab
frame (or SO(2)-equivariant about +y when they are in an edge frame).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from atomshard.errors import InputError
from atomshard.nn.so2 import SO2Linear

__all__ = [
    "EdgeUpdate",
    "EquivariantRMSNorm",
    "GaussianBasis",
    "NodeUpdate",
    "reverse_edges",
    "segment_softmax",
]


def _degree_index(l_max: int) -> torch.Tensor:
    return torch.tensor([l for l in range(l_max + 1) for _ in range(2 * l + 1)])


class GaussianBasis(nn.Module):
    """Gaussians of the distance times a smooth cosine cutoff.

    Shapes:
        r: ``[n_edges]`` float64 Å; returns ``[n_edges, n_rbf]`` float64
    """

    centers: torch.Tensor

    def __init__(self, n_rbf: int, cutoff: float) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("centers", torch.linspace(0.0, cutoff, n_rbf, dtype=torch.float64))
        self.width = cutoff / max(n_rbf - 1, 1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        g = torch.exp(-0.5 * ((r[:, None] - self.centers) / self.width) ** 2)
        envelope = 0.5 * (torch.cos(torch.pi * (r / self.cutoff).clamp(max=1.0)) + 1.0)
        return g * envelope[:, None]


class EquivariantRMSNorm(nn.Module):
    """Divide each degree ``l`` by its RMS over ``m`` and channels; learnable scale per (l, c).

    Shapes:
        x: ``[n, S, C]``; returns the same
    """

    degree: torch.Tensor

    def __init__(self, l_max: int, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.l_max, self.eps = l_max, eps
        self.scale = nn.Parameter(torch.ones(l_max + 1, channels))
        self.register_buffer("degree", _degree_index(l_max), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sq = x.pow(2)
        per_l = torch.zeros(x.shape[0], self.l_max + 1, device=x.device, dtype=x.dtype)
        per_l = per_l.index_add(1, self.degree, sq.mean(dim=2))
        counts = torch.tensor(
            [2 * l + 1 for l in range(self.l_max + 1)], dtype=x.dtype, device=x.device
        )
        rms = torch.sqrt(per_l / counts + self.eps)  # [n, l_max+1]
        factor = self.scale[None].to(x.dtype) / rms[:, :, None]  # [n, l_max+1, C]
        return x * factor.index_select(1, self.degree)


class _MessageTransform(nn.Module):
    """Edge-frame transform of ``[x_src, x_dst, e]``: SO(2) -> gate -> SO(2), rotated back."""

    degree: torch.Tensor

    def __init__(self, l_max: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.l_max = l_max
        self.so2_in = SO2Linear(l_max, 3 * channels, hidden)
        self.gates = nn.Linear(hidden, hidden * l_max)
        self.so2_out = SO2Linear(l_max, hidden, channels)
        self.register_buffer("degree", _degree_index(l_max), persistent=False)

    def forward(self, message: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        """Shapes: message ``[n_edges, S, 3E]`` lab frame; rot ``[n_edges, S, S]``."""
        h = self.so2_in(rot.transpose(1, 2) @ message)
        scalars = h[:, 0, :]
        n, hidden = h.shape[0], h.shape[2]
        # degree-l features are scaled by sigmoid gates of invariant scalars (all m alike,
        # so rotations about the edge still commute); the scalars themselves get SiLU
        gates = torch.sigmoid(self.gates(scalars)).reshape(n, self.l_max, hidden)
        gated = h[:, 1:] * gates.index_select(1, self.degree[1:] - 1)
        act = torch.cat([torch.nn.functional.silu(scalars)[:, None], gated], dim=1)
        return rot @ self.so2_out(act)


class _MessageUpdate(nn.Module):
    """What node and edge updates share: each edge's message ``[x_src, x_dst, e]`` through
    the SO(2) transform in the edge's frame. A subclass says which input is normed first
    (``_normed``) and where the messages go (``_update``).

    Shapes:
        x: ``[n_atoms, S, E]``; e: ``[n_edges, S, E]``; rot: ``[n_edges, S, S]``
    """

    def __init__(self, l_max: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.transform = _MessageTransform(l_max, channels, hidden)

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        rot: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
    ) -> torch.Tensor:
        xm, em = self._normed(x, e)
        message = torch.cat([xm.index_select(0, src), xm.index_select(0, dst), em], dim=2)
        return self._update(x, e, self.transform(message, rot), dst)

    def _normed(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _update(
        self, x: torch.Tensor, e: torch.Tensor, m: torch.Tensor, dst: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError


class NodeUpdate(_MessageUpdate):
    """Messages on incoming edges, attention over them, weighted sum into ``dst``.

    Shapes:
        x: ``[n_atoms, S, E]``; e: ``[n_edges, S, E]``; rot: ``[n_edges, S, S]``
        returns: ``[n_atoms, S, E]`` updated node embeddings
    """

    def __init__(self, l_max: int, channels: int, hidden: int) -> None:
        super().__init__(l_max, channels, hidden)
        self.attention = nn.Sequential(
            nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, 1)
        )
        self.norm = EquivariantRMSNorm(l_max, channels)

    def _normed(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.norm(x), e

    def _update(
        self, x: torch.Tensor, e: torch.Tensor, m: torch.Tensor, dst: torch.Tensor
    ) -> torch.Tensor:
        logits = self.attention(m[:, 0, :]).squeeze(1)
        alpha = segment_softmax(logits, dst, x.shape[0])
        # aggregate in the embeddings' dtype (float32 under bfloat16 autocast)
        weighted = (m * alpha[:, None, None].to(m.dtype)).to(x.dtype)
        agg = torch.zeros_like(x).index_add(0, dst, weighted)
        return x + agg


class EdgeUpdate(_MessageUpdate):
    """The same message transform, added to each edge's own embedding (no aggregation).

    Shapes:
        returns: ``[n_edges, S, E]`` updated edge embeddings
    """

    def __init__(self, l_max: int, channels: int, hidden: int) -> None:
        super().__init__(l_max, channels, hidden)
        self.norm = EquivariantRMSNorm(l_max, channels)

    def _normed(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.norm(e)

    def _update(
        self, x: torch.Tensor, e: torch.Tensor, m: torch.Tensor, dst: torch.Tensor
    ) -> torch.Tensor:
        return e + m


def segment_softmax(logits: torch.Tensor, index: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Softmax of ``logits`` within groups sharing ``index`` (the incoming edges of a node).

    Shapes:
        logits, index: ``[n_edges]``; returns ``[n_edges]`` (float32 at least)
    """
    logits = logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits
    top = torch.full((n_segments,), -math.inf, dtype=logits.dtype, device=logits.device)
    top = top.scatter_reduce(0, index, logits.detach(), reduce="amax", include_self=True)
    w = torch.exp(logits - top.index_select(0, index))
    total = torch.zeros(n_segments, dtype=w.dtype, device=w.device).index_add(0, index, w)
    return w / total.index_select(0, index)


def reverse_edges(src: torch.Tensor, dst: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Index of the reverse edge ``(dst -> src, -shift)`` of every edge.

    Shapes:
        src, dst: ``[n_edges]`` int64; shifts: ``[n_edges, 3]`` int64
        returns: ``[n_edges]`` int64
    """
    s, d, sh = src.cpu().numpy(), dst.cpu().numpy(), shifts.cpu().numpy()
    fwd = np.lexsort((sh[:, 2], sh[:, 1], sh[:, 0], d, s))
    bwd = np.lexsort((-sh[:, 2], -sh[:, 1], -sh[:, 0], s, d))
    a = np.column_stack([s, d, sh])[fwd]
    b = np.column_stack([d, s, -sh])[bwd]
    if not np.array_equal(a, b):
        raise InputError(
            "the edge list is not symmetric: some edge lacks its reverse "
            "(dst -> src, -shift); Hamiltonian blocks need both directions"
        )
    rev = np.empty(len(s), dtype=np.int64)
    rev[bwd] = fwd
    return torch.as_tensor(rev, device=src.device)
