"""The node layout of a fused chunk: ``[n_nodes, in-degree]`` slots, no scatter.

A chunk's edges go into slots (:class:`_PadPlan`) and the contraction is reordered so that
the sum over a node's edges is the inner dimension of one batched product per path::

    z_p[s] = x[s] * w_p[s];   T_p[i] = Σ_{s in row i} Y[s]^T z_p[s];   agg_p[i] = C_p · T_p[i]

(:meth:`NodeLayout._chunk_nodes`): no per-edge output ``[E, d3, u]``, no scatter, and the
3j symbols on the node side. Each node irrep's block is gathered as its own contiguous
``[slots, d1, u]`` tensor and each path's radial weights are one contiguous ``[slots, u]``
matrix, so every per-slot product runs along the channels.

Also here: when a call takes this layout (:meth:`NodeLayout.use_nodes`) and how its rows
are ordered (:meth:`NodeLayout.row_order`, :func:`_positions`, :func:`_edges_by_rows`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from atomshard.models.potential.conv._autograd import _Gather, _RowSink
from atomshard.models.potential.conv._base import ConvBase
from atomshard.models.potential.conv._settings import (
    MAX_CHUNK_PADDING,
    MAX_NODE_PADDING,
    SORT_NODE_PADDING,
)


class _PadPlan:
    """A chunk's edges (sorted by destination) in ``[n_nodes, width]`` slots, node ``i``'s
    edges first in row ``i`` (in edge order), the rest of the row padding; ``width`` is the
    chunk's largest in-degree.

    Padding slots read node row 0 (``src``), have zero spherical harmonics and a zero
    radial basis, so they add exactly nothing to any node sum, and get exactly zero
    gradients for the node rows and the radial weights.

    Attributes:
        pos: ``[n_edges]`` the slot of each edge; src: ``[n_slots]`` source row per slot.
    """

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, n_nodes: int) -> None:
        deg = torch.bincount(dst, minlength=n_nodes)
        self.n_nodes = int(n_nodes)
        self.width = int(deg.max()) if dst.numel() else 0
        self.n_slots = self.n_nodes * self.width
        first = torch.cumsum(deg, 0) - deg
        rank = torch.arange(dst.shape[0], device=dst.device) - first.index_select(0, dst)
        self.pos = dst * self.width + rank
        self.src = self.pad(src)

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        """Per-edge ``values`` ``[n_edges, ...]`` in slots ``[n_slots, ...]`` (zero padding;
        differentiable)."""
        out = values.new_zeros((self.n_slots, *values.shape[1:]))
        return out.index_copy(0, self.pos, values)

    def unpad(self, values: torch.Tensor) -> torch.Tensor:
        """Per-slot ``values`` back to per-edge ``[n_edges, ...]``."""
        return values.index_select(0, self.pos)

    def y_t(self, sh: torch.Tensor) -> torch.Tensor:
        """The padded spherical harmonics as ``[n_nodes, dim Y, width]`` (a view)."""
        return self.slots_t(self.pad(sh))

    def slots_t(self, values: torch.Tensor) -> torch.Tensor:
        """Per-slot values ``[n_slots, k]`` as ``[n_nodes, k, width]`` (a view if it can)."""
        return values.reshape(self.n_nodes, self.width, values.shape[1]).transpose(1, 2)


def _positions(node_order: torch.Tensor) -> torch.Tensor:
    """The new position of each node when the rows are put in ``node_order``."""
    pos = torch.empty_like(node_order)
    pos[node_order] = torch.arange(node_order.shape[0], device=node_order.device)
    return pos


def _edges_by_rows(pos: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The edge order after the rows move to ``pos`` (stable: each node keeps its edges in
    their order) and the new destinations in that order, sorted."""
    new_dst = pos.index_select(0, dst)
    order = torch.argsort(new_dst, stable=True)
    return order, new_dst.index_select(0, order)


class NodeLayout(ConvBase):
    """The node layout's methods of :class:`FusedUVUConvolution`."""

    @staticmethod
    def pad_plan(src: torch.Tensor, dst: torch.Tensor, n_nodes: int) -> _PadPlan:
        """A chunk's edges (sorted by destination) in slots (:class:`_PadPlan`)."""
        return _PadPlan(src, dst, n_nodes)

    @staticmethod
    def _auto_nodes(device: torch.device) -> bool:
        """Whether ``"auto"`` may take the node layout on ``device`` (it has been measured
        to pay on the CPU only)."""
        return device.type == "cpu"

    def _ncg(self, i: int, dtype: torch.dtype) -> torch.Tensor:
        """Path ``i``'s 3j block ``[d3, d2, d1]`` (node layout) in ``dtype`` (see :meth:`_cg`)."""
        buf = getattr(self, f"ncg_{i}")
        assert isinstance(buf, torch.Tensor)
        return buf if buf.dtype == dtype else buf.to(dtype)

    def use_nodes(self, deg: torch.Tensor, bounds: Sequence[int], n_edges: int) -> bool:
        """Whether the chunks ``bounds`` (node ranges) of one call take the node layout
        (see :attr:`layout`): ``deg`` is the in-degree of each node."""
        if self.layout != "auto" or n_edges == 0:
            return self.layout == "nodes" and n_edges > 0
        if not self._auto_nodes(deg.device):
            return False
        # the whole call, and its worst chunk (one atom with many neighbours, e.g. in a
        # geometry gone wrong, would make its chunk's slots many times its edges)
        if self._padding(deg, bounds, n_edges) > MAX_NODE_PADDING:
            return False
        return all(
            self._padding(deg[a:b], [0, b - a], int(deg[a:b].sum())) <= MAX_CHUNK_PADDING
            for a, b in itertools.pairwise(bounds)
            if b > a
        )

    def nodes_weights(self, hidden: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The radial weights of the node layout from the MLP's last hidden layer and last
        matrix (:meth:`radial_hidden` with ``nodes``): flat, one ``[P_g, n_slots, u_g]``
        block per group (path-major, so that each path's weights are one contiguous
        ``[n_slots, u]`` matrix). Differentiable under autograd; else written in place."""
        n_slots = hidden.shape[0]
        lasts = last.split(self._w_sizes, dim=1)
        if torch.is_grad_enabled() and (hidden.requires_grad or last.requires_grad):
            # the same products as below (bitwise the same weights), differentiable
            blocks = [
                torch.stack([hidden @ m_p for m_p in m.split(grp.mul, dim=1)])
                for grp, m in zip(self._groups, lasts)
            ]
            return torch.cat([blk.reshape(-1) for blk in blocks])
        flat = hidden.new_empty(n_slots * self.weight_numel)
        for grp, m, blk in zip(self._groups, lasts, self._group_weights(flat, n_slots)):
            for p in range(grp.n_paths):
                torch.mm(hidden, m[:, p * grp.mul : (p + 1) * grp.mul], out=blk[p])
        return flat

    def path_order(self, values: torch.Tensor, major: bool) -> torch.Tensor:
        """``[n_slots, weight_numel]`` node-layout weights (``hidden @ last``) as the flat
        path-major tensor of :meth:`nodes_weights` with ``major``, or that flat tensor back
        to ``[n_slots, weight_numel]`` without (the same values, copied)."""
        n_slots = values.shape[0] if major else values.shape[0] // max(self.weight_numel, 1)
        shape = (n_slots * self.weight_numel,) if major else (n_slots, self.weight_numel)
        out = values.new_empty(shape)
        for blk, src in zip(
            self._group_weights(out, n_slots), self._group_weights(values, n_slots)
        ):
            blk.copy_(src)
        return out

    def _group_weights(self, flat: torch.Tensor, n_slots: int) -> list[torch.Tensor]:
        """The ``[P_g, n_slots, u_g]`` views of a flat node-layout weight tensor, or of a
        ``[n_slots, weight_numel]`` one (``hidden @ last`` of :meth:`radial_hidden` with
        ``nodes``: each path's ``[n_slots, u]`` then a strided view; the force-loss
        backward, :func:`._autograd._differentiable_grads`, keeps this form, whose
        derivatives are one matrix product)."""
        if flat.dim() == 2:
            return [
                blk.view(n_slots, grp.n_paths, grp.mul).transpose(0, 1)
                for grp, blk in zip(self._groups, flat.split(self._w_sizes, dim=1))
            ]
        sizes = [n_slots * w for w in self._w_sizes]
        return [
            blk.view(grp.n_paths, n_slots, grp.mul)
            for grp, blk in zip(self._groups, flat.split(sizes))
        ]

    def _nodes_mlp_grads(
        self,
        g_flat: torch.Tensor,
        hidden: torch.Tensor,
        last: torch.Tensor,
        n_slots: int,
        need: tuple[bool, bool] = (True, True),
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The backward of :meth:`nodes_weights`: the gradients of ``hidden`` and ``last``
        (those ``need`` asks for) from that of the flat weights, one product per path."""
        g_hidden = hidden.new_zeros(hidden.shape) if need[0] else None
        g_last = last.new_empty(last.shape) if need[1] else None
        lasts = last.split(self._w_sizes, dim=1)
        g_lasts = g_last.split(self._w_sizes, dim=1) if g_last is not None else lasts
        for grp, m, g_m, g_blk in zip(
            self._groups, lasts, g_lasts, self._group_weights(g_flat, n_slots)
        ):
            u = grp.mul
            for p in range(grp.n_paths):
                cols = slice(p * u, (p + 1) * u)
                if g_hidden is not None:
                    g_hidden.addmm_(g_blk[p], m[:, cols].t())
                if g_last is not None:
                    g_m[:, cols] = hidden.t() @ g_blk[p]
        return g_hidden, g_last

    def _gather_nodes(
        self, h: torch.Tensor, src: torch.Tensor, sink: _RowSink | None = None
    ) -> list[torch.Tensor]:
        """The gathered rows ``h[src]`` as one contiguous ``[n_slots, mul * dim]`` tensor per
        node irrep: the products of the node layout run several times slower on a column
        slice of one gathered tensor, and gathering each irrep's columns is no slower than
        gathering the rows once. With a ``sink`` (autograd through the chunk) the rows are
        gathered once (:class:`_Gather`)."""
        if sink is not None:
            gathered = _Gather.apply(h, src, sink)
            return [t.contiguous() for t in gathered.split(self._x_sizes, dim=1)]
        return [t.index_select(0, src) for t in h.split(self._x_sizes, dim=1)]

    def _chunk_nodes(
        self,
        h: torch.Tensor,
        y_t: torch.Tensor,
        weights: torch.Tensor,
        plan: _PadPlan,
        sink: _RowSink | None = None,
    ) -> torch.Tensor:
        """Node sums ``[n_nodes, group_dim]`` (group layout) of one chunk in the node layout
        (``h`` with its columns in ``au_perm`` order: ``[a, u]`` per node irrep; ``weights``
        from :meth:`nodes_weights`).

        Per group (node irrep ``l1``, ``u`` channels, ``d1`` components) and Y irrep ``l2``
        read by some of its paths ``p``::

            z_p[s, a, u]  = x[s, a, u] w_p[s, u]                  (per slot s)
            T_p[i, b, a, u] = Σ_{s in row i} Y[s, b] z_p[s, a, u]  (one bmm, batch i)
            agg_p[i, c, u]  = Σ_{b, a} C_p[c, b, a] T_p[i, b, a, u]  (per node)

        The sum over a node's edges is the inner dimension of the batched product, so no
        per-edge output ``[E, d3, u]`` is formed and nothing is scattered; the 3j symbols
        are applied on the node side, where there are ``width`` times fewer rows.
        """
        n, width = plan.n_nodes, plan.width
        n_slots = plan.n_slots
        xs = self._gather_nodes(h, plan.src, sink)
        wg = self._group_weights(weights, n_slots)
        pieces: dict[int, torch.Tensor] = {}
        for ys in self._ysets:
            grp = self._groups[ys.group]
            u, d1 = grp.mul, grp.d1
            y = y_t[:, ys.y_slice, :]
            x = xs[grp.x_index].view(n_slots, d1, u)
            for j, i in enumerate(ys.paths):
                path = self._paths[i]
                z = x * wg[grp.index][ys.w.start + j].unsqueeze(1)  # [n_slots, d1, u]
                t = torch.bmm(y, z.view(n, width, d1 * u))
                del z
                d2 = y.shape[1]
                agg = torch.einsum("cba,nbau->ncu", self._ncg(i, t.dtype), t.view(n, d2, d1, u))
                pieces[grp.col_start + path.koff * u] = agg.reshape(n, -1)
        return torch.cat([pieces[k] for k in sorted(pieces)], dim=1)

    def _chunk_nodes_grads(
        self,
        grad: torch.Tensor,
        h: torch.Tensor,
        y_t: torch.Tensor,
        weights: torch.Tensor,
        plan: _PadPlan,
        need: tuple[bool, bool, bool] = (True, True, True),
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The hand-written backward of :meth:`_chunk_nodes`: from the gradient of the node
        sums (``[n_nodes, group_dim]``), the gradients of the gathered rows ``h[plan.src]``
        (``[n_slots, dim_x]``, ``au_perm`` order), of the padded ``Y`` (``[n_slots,
        dim_y]``) and of the flat weights (:meth:`nodes_weights` layout); exactly zero in
        the padding slots, but for ``Y``'s. ``need`` says which of the three to form (the
        others are None): the double backward (:class:`._autograd._ChunkGrad`) asks for
        two at a time.

        Per path: ``gT = C^T g_agg`` (node side), ``z = x w`` formed again, ``gY = gT z^T``
        and ``gz = Y gT`` (two bmm), then ``gx += gz w`` and ``gw = Σ_a gz x``.
        """
        n, width = plan.n_nodes, plan.width
        n_slots = plan.n_slots
        xs = self._gather_nodes(h, plan.src)
        wg = self._group_weights(weights, n_slots)
        need_x, need_y, need_w = need
        g_weights = weights.new_empty(weights.shape) if need_w else None
        g_wg = self._group_weights(g_weights, n_slots) if g_weights is not None else []
        g_xs: list[torch.Tensor | None] = [None] * len(self._x_sizes)
        g_yt = y_t.new_zeros((n, self._dim_y, width)) if need_y else None
        for ys in self._ysets:
            grp = self._groups[ys.group]
            u, d1 = grp.mul, grp.d1
            y = y_t[:, ys.y_slice, :]
            d2 = y.shape[1]
            x = xs[grp.x_index].view(n_slots, d1, u)
            g_y = None
            for j, i in enumerate(ys.paths):
                path = self._paths[i]
                col = grp.col_start + path.koff * u
                d3 = 2 * path.ls[2] + 1
                g_agg = grad[:, col : col + d3 * u].view(n, d3, u)
                g_t = torch.einsum("cba,ncu->nbau", self._ncg(i, grad.dtype), g_agg)
                g_t = g_t.reshape(n, d2, d1 * u)
                w = wg[grp.index][ys.w.start + j].unsqueeze(1)  # [n_slots, 1, u]
                if need_y:
                    z = (x * w).view(n, width, d1 * u)
                    g_y = (
                        torch.bmm(g_t, z.transpose(1, 2))
                        if g_y is None
                        else g_y.baddbmm_(g_t, z.transpose(1, 2))
                    )
                    del z
                if not (need_x or need_w):
                    continue
                g_z = torch.bmm(y.transpose(1, 2), g_t).view(n_slots, d1, u)
                if need_x:
                    g_x = g_xs[grp.x_index]
                    if g_x is None:
                        g_xs[grp.x_index] = g_z * w
                    else:
                        g_x.addcmul_(g_z, w)
                if need_w:  # gw[s, u] = Σ_a gz[s, a, u] x[s, a, u], one component at a time
                    g_w = g_wg[grp.index][ys.w.start + j]
                    torch.mul(g_z[:, 0], x[:, 0], out=g_w)
                    for a in range(1, d1):
                        g_w.addcmul_(g_z[:, a], x[:, a])
                del g_z
            if g_yt is not None:
                assert g_y is not None
                g_yt[:, ys.y_slice, :] += g_y  # every group's
        g_gathered = g_y_all = None
        if need_x:
            g_cols = [  # a node irrep no path reads gets zeros
                grad.new_zeros((n_slots, size)) if g is None else g.view(n_slots, size)
                for g, size in zip(g_xs, self._x_sizes)
            ]
            g_gathered = g_cols[0] if len(g_cols) == 1 else torch.cat(g_cols, dim=1)
        if g_yt is not None:
            g_y_all = g_yt.transpose(1, 2).reshape(n_slots, self._dim_y)
        return g_gathered, g_y_all, g_weights

    def _chunk_nodes_double(
        self,
        grad: torch.Tensor,
        h: torch.Tensor,
        y_t: torch.Tensor,
        weights: torch.Tensor,
        cot: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None],
        plan: _PadPlan,
        need: tuple[bool, bool, bool, bool],
    ) -> tuple[torch.Tensor | None, ...]:
        """The backward of :meth:`_chunk_nodes_grads` (the double backward of a chunk, see
        :class:`._autograd._ChunkGrad`) in one pass over the paths.

        ``cot`` are the cotangents ``(a_h, a_y, a_w)`` of the three gradients (node rows,
        ``[n_nodes, dim Y, width]`` like ``y_t``, weights like ``weights``; None for zero).
        Per path, with ``gT = C^T g`` formed once, ``z' = a_x w + x a_w`` and
        ``gz = Y gT``, ``gz' = a_Y gT``::

            d/dg = C (Y^T z' + a_Y^T (x w))      d/dY = gT z'^T
            d/dx = gz a_w + gz' w                 d/dw = Σ_a (gz a_x + gz' x)

        Returns the gradients of ``grad``, of the gathered rows (``[n_slots, dim_x]``), of
        the per-slot ``Y`` (``[n_slots, dim_y]``) and of ``weights``, those ``need``
        (in that order) asks for, else None.
        """
        need_g, need_x, need_y, need_w = need
        a_h, a_yt, a_w = cot
        n, width, n_slots = plan.n_nodes, plan.width, plan.n_slots
        xs = self._gather_nodes(h, plan.src)
        axs = self._gather_nodes(a_h, plan.src) if a_h is not None else None
        wg = self._group_weights(weights, n_slots)
        awg = self._group_weights(a_w, n_slots) if a_w is not None else None
        g_g = grad.new_zeros(grad.shape) if need_g else None
        g_w = weights.new_zeros(weights.shape) if need_w else None
        g_wg = self._group_weights(g_w, n_slots) if g_w is not None else None
        g_yt = y_t.new_zeros((n, self._dim_y, width)) if need_y else None
        g_xs: list[torch.Tensor | None] = [None] * len(self._x_sizes)
        for ys in self._ysets:
            grp = self._groups[ys.group]
            u, d1 = grp.mul, grp.d1
            y = y_t[:, ys.y_slice, :]
            ay = a_yt[:, ys.y_slice, :] if a_yt is not None else None
            d2 = y.shape[1]
            x = xs[grp.x_index].view(n_slots, d1, u)
            ax = axs[grp.x_index].view(n_slots, d1, u) if axs is not None else None
            g_y: torch.Tensor | None = None
            for j, i in enumerate(ys.paths):
                path = self._paths[i]
                k = ys.w.start + j
                col = grp.col_start + path.koff * u
                d3 = 2 * path.ls[2] + 1
                ncg = self._ncg(i, grad.dtype)
                w = wg[grp.index][k].unsqueeze(1)  # [n_slots, 1, u]
                aw = awg[grp.index][k].unsqueeze(1) if awg is not None else None
                z: torch.Tensor | None = None  # a_x w + x a_w
                if ax is not None:
                    z = ax * w
                if aw is not None:
                    z = x * aw if z is None else z.addcmul_(x, aw)
                zv = z.view(n, width, d1 * u) if z is not None else None
                if g_g is not None and (zv is not None or ay is not None):
                    t = torch.bmm(y, zv) if zv is not None else None
                    if ay is not None:
                        xw = (x * w).view(n, width, d1 * u)
                        t = torch.bmm(ay, xw) if t is None else t.baddbmm_(ay, xw)
                        del xw
                    assert t is not None
                    agg = torch.einsum("cba,nbau->ncu", ncg, t.view(n, d2, d1, u))
                    g_g[:, col : col + d3 * u] = agg.reshape(n, d3 * u)
                    del t, agg
                want_gz = (need_x and aw is not None) or (need_w and ax is not None)
                want_gz2 = ay is not None and (need_x or need_w)
                if not (want_gz or want_gz2 or (need_y and zv is not None)):
                    continue
                g_agg = grad[:, col : col + d3 * u].reshape(n, d3, u)
                g_t = torch.einsum("cba,ncu->nbau", ncg, g_agg).reshape(n, d2, d1 * u)
                if need_y and zv is not None:
                    zt = zv.transpose(1, 2)
                    g_y = torch.bmm(g_t, zt) if g_y is None else g_y.baddbmm_(g_t, zt)
                gz = torch.bmm(y.transpose(1, 2), g_t).view(n_slots, d1, u) if want_gz else None
                gz2 = None
                if want_gz2:
                    assert ay is not None
                    gz2 = torch.bmm(ay.transpose(1, 2), g_t).view(n_slots, d1, u)
                if need_x:
                    for gzi, wi in ((gz, aw), (gz2, w)):
                        if gzi is None or wi is None:
                            continue
                        g_x = g_xs[grp.x_index]
                        if g_x is None:
                            g_xs[grp.x_index] = gzi * wi
                        else:
                            g_x.addcmul_(gzi, wi)
                if g_wg is not None:
                    g_wp = g_wg[grp.index][k]  # [n_slots, u]
                    for gzi, xi in ((gz, ax), (gz2, x)):
                        if gzi is None or xi is None:
                            continue
                        for a in range(d1):
                            g_wp.addcmul_(gzi[:, a], xi[:, a])
                del g_t, gz, gz2, z, zv
            if g_yt is not None and g_y is not None:
                g_yt[:, ys.y_slice, :] += g_y
        g_gathered = g_y_all = None
        if need_x:
            g_cols = [
                grad.new_zeros((n_slots, size)) if g is None else g.view(n_slots, size)
                for g, size in zip(g_xs, self._x_sizes)
            ]
            g_gathered = g_cols[0] if len(g_cols) == 1 else torch.cat(g_cols, dim=1)
        if g_yt is not None:
            g_y_all = g_yt.transpose(1, 2).reshape(n_slots, self._dim_y)
        return g_g, g_gathered, g_y_all, g_w

    def row_order(self, dst: torch.Tensor, n_nodes: int, step: int) -> torch.Tensor | None:
        """New positions ``[n_nodes]`` of the destination rows, ordered by in-degree
        (stable), when the chunks of ``step`` edges pad by more than
        :data:`SORT_NODE_PADDING` in atom order and by less than 0.95 of that in degree
        order; else None (``dst`` sorted)."""
        n_edges = dst.shape[0]
        if n_edges == 0:
            return None
        deg = torch.bincount(dst, minlength=n_nodes)
        padding = self._padding(deg, self._bounds(deg, n_edges, step), n_edges)
        if padding <= SORT_NODE_PADDING:
            return None
        fewer, node_order = torch.sort(deg, stable=True)
        sorted_padding = self._padding(fewer, self._bounds(fewer, n_edges, step), n_edges)
        if sorted_padding > 0.95 * padding:
            return None  # e.g. a single chunk: its widest row stays as wide
        if self.layout == "auto" and sorted_padding > MAX_NODE_PADDING:
            return None  # the edge layout it is: keep the atoms' order
        return _positions(node_order)

    @staticmethod
    def _bounds(deg: torch.Tensor, n_edges: int, step: int) -> list[int]:
        """Node ranges ``[bounds[k], bounds[k+1])`` of the chunks: whole nodes, about
        ``step`` edges each (edges sorted by destination, ``deg`` their in-degrees)."""
        n_nodes = deg.shape[0]
        ends = deg.cumsum(0)
        cuts: list[int] = []
        if n_edges > step:
            targets = torch.arange(step, n_edges, step, device=deg.device)
            cuts = torch.searchsorted(ends, targets, right=True).tolist()
        return sorted({0, *(min(int(c), n_nodes) for c in cuts), n_nodes})

    @staticmethod
    def _padding(deg: torch.Tensor, bounds: Sequence[int], n_edges: int) -> float:
        """Slots of the node layout over edges, every chunk padded to its largest degree."""
        slots = sum((b - a) * int(deg[a:b].max()) for a, b in itertools.pairwise(bounds) if b > a)
        return slots / max(n_edges, 1)
