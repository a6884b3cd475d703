"""Overlapping a layer's halo exchange with the convolution of its interior nodes.

In the graph-parallel runtime the owned atoms none of whose incoming edges reads a halo
row can be computed while the halo rows are still travelling: :class:`OverlapPlan` puts
those *interior* atoms (and their edges) first, and
:meth:`OverlappedForward.forward_overlapped` computes them between starting the exchange
and waiting for it. The chunks, and so the numbers, are the same as without overlap.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from atomshard.models.base import PendingRows
from atomshard.models.potential.conv._base import ConvBase
from atomshard.models.potential.conv._nodes import _edges_by_rows, _positions
from atomshard.nn.radial import RadialMLP


class OverlapPlan:
    """One rank's edges ordered for overlapping the halo exchange with the convolution.

    The owned atoms are reordered: *interior* ones first (no incoming edge reads a halo
    row, so their messages need only the owned rows, which are at hand before the exchange
    completes), then *boundary* ones; edges are sorted by their destination's new position
    (stable, so each node keeps its edge order and its sum its rounding). Built once per
    evaluation and shared by all layers.

    Attributes:
        order: ``[n_edges]`` the edge permutation (apply to per-edge features with
            :meth:`edges`); src: ``[n_edges]`` local source rows in that order; dst:
            ``[n_edges]`` new destination positions, sorted.
        pos: ``[n_owned]`` new position of each owned atom (``out.index_select(0, pos)``
            puts a result back in atom order).
        n_inner_nodes, n_inner_edges: interior nodes and the edges into them (they come
            first).
    """

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, n_owned: int) -> None:
        boundary = torch.zeros(n_owned, dtype=torch.bool, device=dst.device)
        boundary[dst[src >= n_owned]] = True
        inner, outer = torch.nonzero(~boundary), torch.nonzero(boundary)
        pos = _positions(torch.cat([inner, outer]).reshape(-1))
        self.order, self.dst = _edges_by_rows(pos, dst)
        self.n_owned = int(n_owned)
        self.n_inner_nodes = int(n_owned - int(boundary.sum()))
        self.src = src.index_select(0, self.order)
        self.pos = pos
        self.n_inner_edges = int(torch.searchsorted(self.dst, self.n_inner_nodes))

    def edges(self, values: torch.Tensor) -> torch.Tensor:
        """Per-edge ``values`` (``[n_edges, ...]``) in the plan's edge order."""
        return values.index_select(0, self.order)


class OverlappedForward(ConvBase):
    """:meth:`forward_overlapped` of :class:`FusedUVUConvolution`."""

    # defined by FusedUVUConvolution (the chunk driver shared with its forward)
    _chunking: Callable[..., tuple[bool, int]]
    _chunks: Callable[..., list[torch.Tensor]]
    _empty: Callable[..., torch.Tensor]

    def forward_overlapped(
        self,
        h_owned: torch.Tensor,
        pending: PendingRows,
        sh: torch.Tensor,
        edge_radial: torch.Tensor,
        radial: RadialMLP,
        plan: OverlapPlan,
        *,
        post: Callable[[torch.Tensor], torch.Tensor] | None = None,
        chunk_edges: int | str | None = None,
        recompute: bool | str | None = None,
    ) -> torch.Tensor:
        """:meth:`forward` with the halo exchange in flight during the interior edges.

        ``pending`` is the started exchange of ``h_owned`` (``StartableExchange.start``). The
        destination nodes none of whose edges reads a halo row (``plan.n_inner_nodes``, in
        ``plan``'s node order) are computed from ``h_owned`` while the halo rows travel;
        then ``pending.wait()`` and the other (boundary) nodes. Same chunks, same numbers.

        Shapes:
            h_owned: ``[n_owned, irreps_in1.dim]``
            sh, edge_radial: ``[n_edges, ...]`` in ``plan``'s edge order
            returns: ``[n_owned, irreps_out.dim]`` (or ``post``'s width) in ``plan``'s node
            order (row ``plan.pos[i]`` belongs to owned atom ``i``)

        ``chunk_edges`` and ``recompute`` override the :class:`ConvSettings` for this call.
        """
        n_edges = plan.src.shape[0]
        do_recompute, step = self._chunking(n_edges, h_owned.element_size(), chunk_edges, recompute)
        e_in, n_in = plan.n_inner_edges, plan.n_inner_nodes
        n_bd = plan.n_owned - n_in
        sh_in, sh_bd = sh.split([e_in, n_edges - e_in])
        er_in, er_bd = edge_radial.split([e_in, n_edges - e_in])
        src_in, src_bd = plan.src.split([e_in, n_edges - e_in])
        dst_in, dst_bd = plan.dst.split([e_in, n_edges - e_in])
        how = (step, do_recompute, radial, post)
        outs = self._chunks(h_owned, sh_in, er_in, src_in, dst_in, n_in, *how)
        h = pending.wait()  # the interior work above ran while the halo rows travelled
        outs += self._chunks(h, sh_bd, er_bd, src_bd, dst_bd - n_in, n_bd, *how)
        if not outs:
            return self._empty(h, sh, edge_radial, post)
        if n_bd == 0 and h.requires_grad:
            # no boundary node read the halo rows: keep the exchange in the graph anyway, so
            # that this rank's backward takes part in the adjoint (a collective)
            outs[0] = outs[0] + 0.0 * h.sum()
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
