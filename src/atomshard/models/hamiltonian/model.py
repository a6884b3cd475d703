"""The SO(2) equivariant GNN of the Hamiltonian seed: node and edge embeddings -> H blocks.

Per layer (``n_layers`` of them): ``x = exchange(x)`` (identity serially; the halo exchange
when graph-parallel), then a node update (messages ``[x_src, x_dst, e]`` rotated into each
edge's frame, SO(2) linear -> gate -> SO(2) linear, rotated back, attention-weighted sum
over the incoming edges of every node) and an edge update (the same transform added to
the edge's embedding, no aggregation). Both updates read the layer's exchanged ``x``, so
one exchange per layer suffices.

Node ``i`` predicts ``H_ii(0)`` (symmetrised); edge ``k = src -> dst`` predicts
``H_{dst,src}(shift_k)`` and the pair of directions is symmetrised,
``B_k = (raw_k + raw_rev(k)^T) / 2``, so ``H_ji(-R) = H_ij(R)^T`` holds exactly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.hamiltonian.blocks import BlockSet
from atomshard.models.base import Exchange, identity_exchange
from atomshard.models.hamiltonian.chunked import chunk_bounds, chunked_layer
from atomshard.models.hamiltonian.config import HamiltonianConfig
from atomshard.models.hamiltonian.heads import BlockHead, RadialBaseline
from atomshard.models.hamiltonian.layers import (
    EdgeUpdate,
    GaussianBasis,
    NodeUpdate,
    reverse_edges,
)
from atomshard.nn.wigner import edge_frame_rotation

__all__ = ["HamiltonianModel", "HamiltonianPrediction"]

Pair = tuple[int, int]


def _apply_head(head: nn.Module, e: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    out = head(e.index_select(0, idx))
    assert isinstance(out, torch.Tensor)
    return out


@dataclass
class HamiltonianPrediction:
    """Predicted blocks grouped by element pair (float64, eV, our orbital convention).

    Attributes:
        node: ``(Z, Z) -> (atom indices [n], blocks [n, n_orb, n_orb])``
        edge: ``(Z_dst, Z_src) -> (edge indices [n], blocks [n, n_orb(Z_dst), n_orb(Z_src)])``
    """

    node: dict[Pair, tuple[torch.Tensor, torch.Tensor]]
    edge: dict[Pair, tuple[torch.Tensor, torch.Tensor]]

    def to_blockset(self, graph: AtomicGraph) -> BlockSet:
        """All blocks as a :class:`BlockSet` (node ``(0,0,0,i,i)``, edge ``(shift,dst,src)``)."""
        pairs, blocks = [], []
        for idx, b in self.node.values():
            for i, blk in zip(idx.tolist(), b.detach().cpu().numpy(), strict=True):
                pairs.append((0, 0, 0, i, i))
                blocks.append(blk)
        sh, src, dst = graph.shifts.cpu().numpy(), graph.src.cpu().numpy(), graph.dst.cpu().numpy()
        for idx, b in self.edge.values():
            for k, blk in zip(idx.tolist(), b.detach().cpu().numpy(), strict=True):
                pairs.append(
                    (int(sh[k, 0]), int(sh[k, 1]), int(sh[k, 2]), int(dst[k]), int(src[k]))
                )
                blocks.append(blk)
        order = np.lexsort(np.array(pairs).T[::-1]) if pairs else np.zeros(0, dtype=np.int64)
        return BlockSet(
            species=graph.species.cpu().numpy(),
            atom_pairs=np.array(pairs, dtype=np.int64).reshape(-1, 5)[order],
            blocks=tuple(blocks[k] for k in order),
        )


class HamiltonianModel(nn.Module):
    """SO(2) equivariant message passing with node and edge embeddings ``[(l_max+1)^2, E]``."""

    config_class = HamiltonianConfig
    type_of: torch.Tensor
    needs_feature_exchange = True

    def __init__(self, config: HamiltonianConfig) -> None:
        super().__init__()
        self.config = config
        self.basis = config.orbital_basis
        self.cutoff = config.cutoff
        self.atomic_numbers = self.basis.elements
        c, lm = config.channels, config.l_max
        self.l_max = lm
        type_of = torch.full((119,), -1, dtype=torch.int64)
        for t, z in enumerate(self.atomic_numbers):
            type_of[z] = t
        self.register_buffer("type_of", type_of, persistent=False)
        self.species_embedding = nn.Embedding(len(self.atomic_numbers), c)
        self.rbf = GaussianBasis(config.n_rbf, config.cutoff)
        self.edge_embedding = nn.Linear(config.n_rbf, c)
        self.node_updates = nn.ModuleList(
            NodeUpdate(lm, c, config.hidden) for _ in range(config.n_layers)
        )
        self.edge_updates = nn.ModuleList(
            EdgeUpdate(lm, c, config.hidden) for _ in range(config.n_layers)
        )
        zs = self.atomic_numbers
        self.node_heads = nn.ModuleDict(
            {f"{z}_{z}": BlockHead(self.basis, z, z, lm, c) for z in zs}
        )
        self.edge_heads = nn.ModuleDict(
            {f"{a}_{b}": BlockHead(self.basis, a, b, lm, c) for a in zs for b in zs}
        )
        self.edge_baselines = nn.ModuleDict(
            {
                key: RadialBaseline(head.irreps, config.edge_baseline, config.cutoff)  # type: ignore[arg-type]
                for key, head in self.edge_heads.items()
            }
            if config.edge_baseline > 0
            else {}
        )
        # node baselines: one per (centre, neighbour) element pair, keyed "zc_zn"
        self.node_baselines = nn.ModuleDict(
            {
                f"{a}_{b}": RadialBaseline(
                    self.node_heads[f"{a}_{a}"].irreps,  # type: ignore[arg-type]
                    config.node_baseline,
                    config.cutoff,
                )
                for a in zs
                for b in zs
            }
            if config.node_baseline > 0
            else {}
        )
        #: memory settings (see :meth:`set_memory`); they never change the results
        self.edge_chunk = 0
        self.checkpoint = False
        body = torch.float64 if config.dtype == "float64" else torch.float32
        self.to(body)
        for head in [*self.node_heads.values(), *self.edge_heads.values()]:
            head.shift.data = head.shift.data.double()  # statistics stay float64
            head.scale.data = head.scale.data.double()
        for baseline in [*self.edge_baselines.values(), *self.node_baselines.values()]:
            baseline.weights.data = baseline.weights.data.double()

    @classmethod
    def from_config(cls, config: HamiltonianConfig) -> HamiltonianModel:
        return cls(config)

    def set_memory(self, *, edge_chunk: int = 0, checkpoint: bool = False) -> None:
        """Bound memory: edges in chunks of ``edge_chunk`` (0: all at once), Wigner-D
        recomputed per chunk; ``checkpoint`` recomputes each chunk's activations in the
        backward pass (``torch.utils.checkpoint``, non-reentrant). Results are unchanged
        (round-off); see :mod:`atomshard.models.hamiltonian.chunked`."""
        if int(edge_chunk) < 0:
            raise InputError(f"edge_chunk must be >= 0 (0: no chunking), got {edge_chunk!r}")
        self.edge_chunk = int(edge_chunk)
        self.checkpoint = bool(checkpoint)

    @property
    def _chunked(self) -> bool:
        return self.edge_chunk > 0 or self.checkpoint

    @property
    def _recompute(self) -> bool:
        return self.checkpoint and torch.is_grad_enabled()

    def _edge_head(self, head: nn.Module, e: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``head(e[idx])``; in chunks (checkpointed when training) in memory-bounded mode."""
        if not self._chunked:
            return head(e.index_select(0, idx))
        bounds = chunk_bounds(len(idx), self.edge_chunk)
        if not torch.is_grad_enabled():
            return torch.cat([_apply_head(head, e, idx[a:b]) for a, b in bounds])
        # With autograd: one selection (its backward is one index_add) split into chunks;
        # selecting per chunk would allocate an all-edges zero gradient per chunk.
        picked = torch.split(e.index_select(0, idx), [b - a for a, b in bounds])
        if self.checkpoint:
            return torch.cat([_checkpoint(head, p, use_reentrant=False) for p in picked])
        return torch.cat([head(p) for p in picked])

    @property
    def body_dtype(self) -> torch.dtype:
        return self.species_embedding.weight.dtype

    def check_species(self, species: torch.Tensor, *, name: str = "structure") -> None:
        self.basis.check_species(species.cpu().numpy(), name=name)

    def embed(
        self, graph: AtomicGraph, exchange: Exchange = identity_exchange
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final node and edge embeddings (lab frame).

        Shapes:
            returns: ``[n_atoms, S, E]`` and ``[n_edges, S, E]`` in the body dtype
        """
        self.check_species(graph.species)
        dtype = self.body_dtype
        vec = graph.edge_vectors().to(torch.float64)
        if graph.n_edges and bool((vec.norm(dim=1) < 1e-8).any()):
            raise InputError("two atoms coincide (an edge of zero length)")
        size = (self.l_max + 1) ** 2
        # memory-bounded mode recomputes the Wigner-D per chunk of edges instead
        rot = None if self._chunked else edge_frame_rotation(vec, self.l_max).to(dtype)
        types = self.type_of.index_select(0, graph.species)
        x = torch.zeros(graph.n_atoms, size, self.config.channels, dtype=dtype, device=graph.device)
        x[:, 0, :] = self.species_embedding(types)
        e = torch.zeros(graph.n_edges, size, self.config.channels, dtype=dtype, device=graph.device)
        e[:, 0, :] = self.edge_embedding(self.rbf(vec.norm(dim=1)).to(dtype))
        autocast = (
            torch.autocast(graph.device.type, dtype=torch.bfloat16)
            if self.config.dtype == "bfloat16"
            else contextlib.nullcontext()
        )
        with autocast:
            for node_update, edge_update in zip(self.node_updates, self.edge_updates, strict=True):
                x = exchange(x)
                if rot is None:
                    assert isinstance(node_update, NodeUpdate)
                    assert isinstance(edge_update, EdgeUpdate)
                    x_new, e = chunked_layer(
                        node_update,
                        edge_update,
                        x,
                        e,
                        vec,
                        graph.src,
                        graph.dst,
                        l_max=self.l_max,
                        chunk=self.edge_chunk,
                        checkpoint=self._recompute,
                    )
                else:
                    x_new = node_update(x, e, rot, graph.src, graph.dst)
                    e = edge_update(x, e, rot, graph.src, graph.dst)
                x = x_new
        return x.to(dtype), e.to(dtype)

    def node_baseline_values(self, graph: AtomicGraph) -> dict[int, torch.Tensor]:
        """Per centre element: the pair-sum baseline's coupled vectors of all atoms
        ``[n_atoms, size]`` (rows of other elements are zero)."""
        vec = graph.edge_vectors()
        zd = graph.species.index_select(0, graph.dst)
        zs = graph.species.index_select(0, graph.src)
        out: dict[int, torch.Tensor] = {}
        for a in self.atomic_numbers:
            acc = None
            for b in self.atomic_numbers:
                sel = torch.nonzero((zd == a) & (zs == b)).flatten()
                if not len(sel):
                    continue
                part = self.node_baselines[f"{a}_{b}"](vec.index_select(0, sel))
                if acc is None:
                    acc = torch.zeros(
                        graph.n_atoms, part.shape[1], dtype=part.dtype, device=part.device
                    )
                acc.index_add_(0, graph.dst.index_select(0, sel), part)
            if acc is not None:
                out[a] = acc
        return out

    def envelope(self, r: torch.Tensor) -> torch.Tensor:
        """Edge-block envelope (``config.edge_envelope``): 1 below ``cutoff - w``, a half
        cosine down to 0 at the cutoff. Shapes: ``r [n_edges]`` float64 -> same."""
        w, rc = self.config.edge_envelope, self.cutoff
        t = ((r - (rc - w)) / w).clamp(0.0, 1.0)
        return 0.5 * (1.0 + torch.cos(torch.pi * t))

    def forward(
        self, graph: AtomicGraph, exchange: Exchange = identity_exchange
    ) -> HamiltonianPrediction:
        x, e = self.embed(graph, exchange)
        species = graph.species
        node: dict[Pair, tuple[torch.Tensor, torch.Tensor]] = {}
        node_base = self.node_baseline_values(graph) if self.node_baselines else {}
        for z in self.atomic_numbers:
            idx = torch.nonzero(species == z).flatten()
            if len(idx):
                b = self.node_heads[f"{z}_{z}"](x.index_select(0, idx))
                if z in node_base:
                    head = self.node_heads[f"{z}_{z}"]
                    assert isinstance(head, BlockHead)
                    b = b + head.blocks(node_base[z].index_select(0, idx))
                node[(z, z)] = (idx, 0.5 * (b + b.transpose(1, 2)))
        raw: dict[Pair, tuple[torch.Tensor, torch.Tensor]] = {}
        position = torch.empty(graph.n_edges, dtype=torch.int64, device=graph.device)
        zd, zs = species.index_select(0, graph.dst), species.index_select(0, graph.src)
        for a in self.atomic_numbers:
            for b in self.atomic_numbers:
                idx = torch.nonzero((zd == a) & (zs == b)).flatten()
                if len(idx):
                    raw[(a, b)] = (idx, self._edge_head(self.edge_heads[f"{a}_{b}"], e, idx))
                    position[idx] = torch.arange(len(idx), device=graph.device)
        if self.edge_baselines and raw:
            vec = graph.edge_vectors()
            for (a, b), (idx, blocks) in list(raw.items()):
                head = self.edge_heads[f"{a}_{b}"]
                assert isinstance(head, BlockHead)
                base = head.blocks(self.edge_baselines[f"{a}_{b}"](vec.index_select(0, idx)))
                raw[(a, b)] = (idx, blocks + base)
        if self.config.edge_envelope > 0 and raw:
            env = self.envelope(graph.edge_vectors().norm(dim=1))
            raw = {
                k: (idx, b * env.index_select(0, idx)[:, None, None]) for k, (idx, b) in raw.items()
            }
        rev = reverse_edges(graph.src, graph.dst, graph.shifts) if graph.n_edges else position
        edge: dict[Pair, tuple[torch.Tensor, torch.Tensor]] = {}
        for (a, b), (idx, blocks) in raw.items():
            partner = raw[(b, a)][1].index_select(0, position.index_select(0, rev[idx]))
            edge[(a, b)] = (idx, 0.5 * (blocks + partner.transpose(1, 2)))
        return HamiltonianPrediction(node=node, edge=edge)
