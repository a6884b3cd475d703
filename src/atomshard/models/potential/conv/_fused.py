"""The fused convolution module: tables, radial weights, chunking and the forward pass.

The layouts' arithmetic lives in :mod:`._edges` and :mod:`._nodes`, the hand-written
backward in :mod:`._autograd`, the overlapped forward in :mod:`._overlap`; this module
holds what they share: the class, its buffers, the radial MLP in fused column order, and
the driver that cuts a call into chunks of whole destination-node ranges.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from e3nn import o3
from torch.utils.checkpoint import checkpoint

from atomshard.models.potential.conv._autograd import (
    _ChunkFunction,
    _EdgeRows,
    _PathOrder,
    _RowSink,
    _Source,
    _substituted,
    _TriFunction,
)
from atomshard.models.potential.conv._edges import EdgeLayout
from atomshard.models.potential.conv._nodes import NodeLayout, _edges_by_rows, _PadPlan
from atomshard.models.potential.conv._overlap import OverlappedForward
from atomshard.models.potential.conv._paths import PathTable, three_j_blocks
from atomshard.models.potential.conv._settings import (
    AUTO_CHUNK_BYTES,
    AUTO_RECOMPUTE_BYTES,
    DEFAULT_CHUNK_EDGES,
    MAX_NODE_PADDING,
    MIN_AUTO_CHUNK_EDGES,
    ConvSettings,
)
from atomshard.nn.radial import RadialMLP
from atomshard.utils.process import release_free_heap


class FusedUVUConvolution(EdgeLayout, NodeLayout, OverlappedForward):
    """Gather + ``uvu`` tensor product + radial weights + scatter, without e3nn's codegen.

    Built from the e3nn ``TensorProduct`` it replaces (which stays the reference and keeps
    the state-dict keys); it holds no parameters of its own, only non-persistent constant
    buffers (dense 3j blocks, index maps), so checkpoints are unchanged.

    Layout: within a group the paths are ordered by output dimension ``d3`` (stable), and
    per edge the group's output is ``[K, u]`` (``K`` = the group's output components), so a
    run of paths with equal ``d3`` is a ``[n, d3, u]`` view that the radial weights
    ``[n, 1, u]`` multiply by broadcasting, never expanded to ``K``. The radial MLP's last
    matrix is used with its columns permuted into that order (``wperm``), so the weights of
    a group are a contiguous ``[P, u]`` slice of its output.

    Args:
        tp: an e3nn ``TensorProduct`` with ``uvu`` instructions, per-edge weights, second
            input of multiplicity one per irrep, and exactly one instruction per output block.
        settings: its run-time knobs (:class:`ConvSettings`; default: the defaults).
    """

    def __init__(self, tp: o3.TensorProduct, settings: ConvSettings | None = None) -> None:
        super().__init__()
        table = PathTable(tp)
        self.dim_x = table.dim_x
        self.dim_out = table.dim_out
        self.weight_numel = tp.weight_numel
        self._groups = table.groups
        self._paths = table.paths
        self._ysets = table.ysets
        self._class_shapes = table.class_shapes  # (d1, n d3) of every class
        self._dim_y = table.dim_y
        self.register_buffer("perm", table.perm, persistent=False)
        self.register_buffer("wperm", table.wperm, persistent=False)
        self.register_buffer("wperm_nodes", table.wperm_nodes, persistent=False)
        self.register_buffer("au_perm", table.au_perm, persistent=False)
        self.group_dim = table.group_dim
        self._x_sizes = table.x_sizes
        self._w_sizes = table.w_sizes
        self._part_sizes = table.part_sizes
        self.load_3j(None)
        self.settings = ConvSettings() if settings is None else settings

    def bytes_per_edge(self, itemsize: int) -> int:
        """Bytes of the main per-edge temporaries of one chunk: gathered node rows, radial
        weights, the per-edge 3j products ``M`` and the group outputs."""
        m = sum(d1 * k for d1, k in self._class_shapes)
        return itemsize * (self.dim_x + self.weight_numel + self.group_dim + m)

    def auto_chunk_edges(self, itemsize: int) -> int:
        """Edges per recomputed chunk for ``chunk_edges="auto"``: about
        :data:`AUTO_CHUNK_BYTES` of temporaries, within ``[MIN_AUTO_CHUNK_EDGES,
        DEFAULT_CHUNK_EDGES]``."""
        n = AUTO_CHUNK_BYTES // max(self.bytes_per_edge(itemsize), 1)
        return int(min(max(n, MIN_AUTO_CHUNK_EDGES), DEFAULT_CHUNK_EDGES))

    def load_3j(self, tp: o3.TensorProduct | None) -> None:
        """(Re)build the dense 3j blocks, from ``tp``'s 3j buffers where it has them.

        A loaded checkpoint may carry its own copies of e3nn's 3j symbols (a SevenNet
        conversion stores float32-rounded ones); reading them back keeps the fused path
        equal to the e3nn path of the same loaded model. Without ``tp`` (or without such a
        buffer) the symbols come from ``o3.wigner_3j`` in float64.
        """
        stored = {}
        if tp is not None:
            stored = {
                name.rsplit(".", 1)[-1]: buf for name, buf in tp.named_buffers() if "_w3j_" in name
            }
        node_blocks, flats = three_j_blocks(self._paths, self._class_shapes, self._dim_y, stored)
        self._keep_buffers("ncg", node_blocks)
        self._keep_buffers("cg", flats)

    def _keep_buffers(self, prefix: str, blocks: Sequence[torch.Tensor]) -> None:
        """Register ``blocks`` as buffers ``{prefix}_{i}`` (not saved), on the device and
        dtype of the ones they replace."""
        for i, block in enumerate(blocks):
            old = getattr(self, f"{prefix}_{i}", None)
            if isinstance(old, torch.Tensor):
                block = block.to(old.device, old.dtype)
            self.register_buffer(f"{prefix}_{i}", block, persistent=False)

    def radial_hidden(
        self,
        radial: RadialMLP,
        edge_radial: torch.Tensor,
        matrices: Sequence[torch.Tensor] | None = None,
        nodes: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The radial MLP up to its last matrix: the last hidden layer's output
        ``[n_edges, fan_in]`` and the last matrix ``[fan_in, weight_numel]``, scaled and with
        its columns in the fused (group) order, or with ``nodes`` each group's paths by Y
        set (``matrices``: the MLP's weight matrices to use instead of ``radial``'s own).
        :meth:`radial_weights` is their product."""
        x = edge_radial
        mats = list(radial.weights) if matrices is None else list(matrices)
        for w in mats[:-1]:
            x = radial.act(x @ (w / math.sqrt(w.shape[0])))
        wperm = self.wperm_nodes if nodes else self.wperm
        assert isinstance(wperm, torch.Tensor)
        w = mats[-1].index_select(1, wperm)
        return x, w / math.sqrt(w.shape[0])

    def radial_weights(
        self,
        radial: RadialMLP,
        edge_radial: torch.Tensor,
        matrices: Sequence[torch.Tensor] | None = None,
        nodes: bool = False,
    ) -> torch.Tensor:
        """``radial(edge_radial)`` with its output columns in the fused (group) order, or
        the node layout's (``nodes``; ``matrices``: the MLP's weight matrices to use
        instead of ``radial``'s own)."""
        hidden, last = self.radial_hidden(radial, edge_radial, matrices, nodes)
        return hidden @ last

    def _sums(
        self,
        radial: RadialMLP,
        h: torch.Tensor,
        sh: torch.Tensor,
        edge_radial: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        n_nodes: int,
        nodes: bool,
        matrices: Sequence[torch.Tensor] | None = None,
        sink: _RowSink | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk's node sums (group layout), in the node layout (``nodes``; ``h`` then
        with its columns in ``au_perm`` order) or the edge layout, with the radial weights
        (per slot, or per edge)."""
        if not nodes:
            weights = self.radial_weights(radial, edge_radial, matrices)
            return self._chunk(h, sh, weights, src, dst, n_nodes, sink), weights
        plan = self.pad_plan(src, dst, n_nodes)
        hidden, last = self.radial_hidden(radial, plan.pad(edge_radial), matrices, nodes=True)
        weights = self.nodes_weights(hidden, last)
        return self._chunk_nodes(h, plan.y_t(sh), weights, plan, sink), weights

    def _tri_sums(
        self, geo: _PadPlan | _EdgeRows, h: torch.Tensor, y: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        """A chunk's node sums ``T(h, y, w)`` (group layout), linear in each argument: ``y``
        the spherical harmonics per slot (node layout, ``geo`` a :class:`_PadPlan`) or per
        edge, ``w`` the radial weights in that layout's order (see :class:`_ChunkGrad`)."""
        if isinstance(geo, _EdgeRows):
            return self._chunk(h, y, w, geo.src, geo.dst, geo.n_nodes)
        return self._chunk_nodes(h, geo.slots_t(y), w.contiguous(), geo)

    def _tri_grads(
        self,
        geo: _PadPlan | _EdgeRows,
        grad: torch.Tensor,
        h: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        need: tuple[bool, bool, bool],
        rows: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The backward of :meth:`_tri_sums` for the node sums' gradient ``grad``: the
        gradients of ``h`` (all its rows; with ``rows`` those of the gathered rows
        ``h[geo.src]`` instead), ``y`` and ``w``, those ``need`` asks for."""
        g_rows: torch.Tensor | None
        g_y: torch.Tensor | None
        g_w: torch.Tensor | None
        if isinstance(geo, _EdgeRows):
            g_rows, g_y, g_w = self._chunk_grads(grad, h, y, w, geo.src, geo.dst)
        else:
            y_t = geo.slots_t(y)
            g_rows, g_y, g_w = self._chunk_nodes_grads(grad, h, y_t, w.contiguous(), geo, need)
        g_h = None
        if need[0] and g_rows is not None:
            g_h = g_rows if rows else h.new_zeros(h.shape).index_add_(0, geo.src, g_rows)
        return g_h, g_y if need[1] else None, g_w if need[2] else None

    def _tri_double(
        self,
        geo: _PadPlan | _EdgeRows,
        grad: torch.Tensor,
        h: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        cot: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None],
        need: tuple[bool, bool, bool, bool],
    ) -> tuple[torch.Tensor | None, ...]:
        """The backward of :meth:`_tri_grads` for the cotangents ``cot`` of its three
        outputs: the gradients of ``grad``, ``h``, ``y`` and ``w`` that ``need`` asks for
        (see :class:`_ChunkGrad`). The node layout does it in one pass over the paths
        (:meth:`_chunk_nodes_double`); the edge layout from :meth:`_tri_sums` and
        :meth:`_tri_grads` with one argument replaced."""
        if isinstance(geo, _PadPlan):
            a_h, a_y, a_w = cot
            a_yt = geo.slots_t(a_y) if a_y is not None else None
            a_w = a_w.contiguous() if a_w is not None else None
            g_g, g_rows, g_y, g_w = self._chunk_nodes_double(
                grad, h, geo.slots_t(y), w.contiguous(), (a_h, a_yt, a_w), geo, need
            )
            g_h = None
            if g_rows is not None:
                g_h = h.new_zeros(h.shape).index_add_(0, geo.src, g_rows)
            return g_g, g_h, g_y, g_w
        return _substituted(self, geo, grad, (h, y, w), cot, need)

    def forward(
        self,
        h: torch.Tensor,
        sh: torch.Tensor,
        edge_radial: torch.Tensor,
        radial: RadialMLP,
        src: torch.Tensor,
        dst: torch.Tensor,
        *,
        n_out: int | None = None,
        post: Callable[[torch.Tensor], torch.Tensor] | None = None,
        chunk_edges: int | str | None = None,
        recompute: bool | str | None = None,
    ) -> torch.Tensor:
        """Summed messages per node in the e3nn output layout, optionally mapped by ``post``.

        Edges are processed in chunks of whole destination-node ranges (edges sorted by
        ``dst``; sorted here if they are not), so each chunk's node sums cover only its own
        rows and ``post`` (a row-wise map, e.g. the layer's next linear) is applied inside
        the chunk: with recompute, nothing of size ``[n_nodes, irreps_out.dim]`` is kept.

        ``n_out`` output rows (default: all ``h``'s rows): in the graph-parallel runtime the
        owned rows, which every edge points into, while ``h`` also holds the halo rows.

        Shapes:
            h: ``[n_local, irreps_in1.dim]``
            sh: ``[n_edges, irreps_in2.dim]``
            edge_radial: ``[n_edges, n_radial]`` (input of ``radial``)
            src: ``[n_edges]`` int64 (``< n_local``); dst: ``[n_edges]`` int64 (``< n_out``)
            returns: ``[n_out, irreps_out.dim]`` (or ``post``'s width)

        ``chunk_edges`` and ``recompute`` override the :class:`ConvSettings` for this call.
        """
        n_nodes = h.shape[0] if n_out is None else int(n_out)
        n_edges = src.shape[0]
        do_recompute, step = self._chunking(n_edges, h.element_size(), chunk_edges, recompute)
        if n_edges > 1 and not bool((dst[1:] >= dst[:-1]).all()):
            order = torch.argsort(dst, stable=True)
            src, dst = src.index_select(0, order), dst.index_select(0, order)
            sh, edge_radial = sh.index_select(0, order), edge_radial.index_select(0, order)
        pos = None
        if self.layout == "nodes" or (self.layout == "auto" and self._auto_nodes(h.device)):
            pos = self.row_order(dst, n_nodes, step)
        if pos is not None:  # rows by in-degree
            order, dst = _edges_by_rows(pos, dst)
            src = src.index_select(0, order)
            sh, edge_radial = sh.index_select(0, order), edge_radial.index_select(0, order)
        outs = self._chunks(h, sh, edge_radial, src, dst, n_nodes, step, do_recompute, radial, post)
        if not outs:
            return self._empty(h, sh, edge_radial, post)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
        return out if pos is None else out.index_select(0, pos)

    def _chunking(
        self,
        n_edges: int,
        itemsize: int,
        chunk_edges: int | str | None = None,
        recompute: bool | str | None = None,
    ) -> tuple[bool, int]:
        """Whether chunks are recomputed, and edges per chunk ("auto": by bytes when
        recomputed, their temporaries being the transient peak, else the default); None
        takes the :class:`ConvSettings` value."""
        if chunk_edges is None:
            chunk_edges = self.settings.chunk_edges
        if recompute is None:
            recompute = self.settings.recompute
        if recompute == "auto":
            # the node layout keeps weights per slot: count the most padding it accepts
            slots = n_edges * (MAX_NODE_PADDING if self.layout != "edges" else 1.0)
            do_recompute = slots * self.weight_numel * itemsize > AUTO_RECOMPUTE_BYTES
        else:
            do_recompute = bool(recompute)
        if chunk_edges == "auto":
            step = self.auto_chunk_edges(itemsize) if do_recompute else DEFAULT_CHUNK_EDGES
        else:
            step = max(int(chunk_edges), 1)
        return do_recompute, step

    def _empty(
        self,
        h: torch.Tensor,
        sh: torch.Tensor,
        edge_radial: torch.Tensor,
        post: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> torch.Tensor:
        """No nodes (a rank that owns nothing): keep the output width, and stay connected to
        h and to the edge features (hence positions), as the e3nn path is, so that every
        rank's force backward reaches the halo exchange (a collective)."""
        link = h.sum() + sh.sum() + edge_radial.sum()
        empty = h.new_zeros((0, self.dim_out)) + 0.0 * link
        return empty if post is None else post(empty)

    def _chunks(
        self,
        h: torch.Tensor,
        sh: torch.Tensor,
        edge_radial: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        n_nodes: int,
        step: int,
        do_recompute: bool,
        radial: RadialMLP,
        post: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> list[torch.Tensor]:
        """Outputs of nodes ``[0, n_nodes)`` (edges sorted by ``dst``), in chunks of whole
        node ranges holding about ``step`` edges each."""
        if n_nodes == 0:
            return []
        n_edges = src.shape[0]
        deg = torch.bincount(dst, minlength=n_nodes)
        ends = deg.cumsum(0)
        bounds = self._bounds(deg, n_edges, step)
        node_sizes = [b - a for a, b in itertools.pairwise(bounds)]
        edge_ends = [0] + [int(ends[b - 1]) if b > 0 else 0 for b in bounds[1:]]
        edge_sizes = [b - a for a, b in itertools.pairwise(edge_ends)]
        outs = []
        nodes = self.use_nodes(deg, bounds, n_edges)
        if nodes:  # each node irrep's block as [a, u] (node side, differentiable)
            au_perm = self.au_perm
            assert isinstance(au_perm, torch.Tensor)
            h = h.index_select(1, au_perm)
        sink = None
        if len(edge_sizes) > 1 and torch.is_grad_enabled() and h.requires_grad:
            # one shared gradient buffer for h instead of one per chunk (see _Gather)
            sink = _RowSink()
            h = _Source.apply(h, sink)
        # split, not slices: the backward of a split is one cat, while each slice's
        # backward would allocate a zero-filled gradient of the full size
        pieces = zip(
            bounds,
            node_sizes,
            sh.split(edge_sizes),
            edge_radial.split(edge_sizes),
            src.split(edge_sizes),
            dst.split(edge_sizes),
        )
        # a training step's stored chunks: the radial MLP by autograd (_TriFunction)
        shared_mlp = (
            not do_recompute
            and self.training
            and self.chunk_backward == "manual"
            and torch.is_grad_enabled()
            and any(m.requires_grad for m in radial.weights)
        )
        for n0, n_c, sh_c, radial_c, src_c, dst_c in pieces:
            args = (radial, post, h, sh_c, radial_c, src_c, dst_c - n0, n_c, sink, nodes)
            recomputed = do_recompute and torch.is_grad_enabled()
            if recomputed and self.chunk_backward == "autograd":
                outs.append(checkpoint(self._node_chunk, *args, use_reentrant=False))
            else:
                outs.append(self._node_chunk(*args, recompute=recomputed, shared_mlp=shared_mlp))
            if recomputed and not h.is_cuda:  # a large system: see release_free_heap
                release_free_heap()
        return outs

    def _node_chunk(
        self,
        radial: RadialMLP,
        post: Callable[[torch.Tensor], torch.Tensor] | None,
        h: torch.Tensor,
        sh: torch.Tensor,
        edge_radial: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        n_nodes: int,
        sink: _RowSink | None = None,
        nodes: bool = False,
        recompute: bool = False,
        shared_mlp: bool = False,
    ) -> torch.Tensor:
        """One chunk's output rows: a :class:`_ChunkFunction` (hand-written backward; the
        radial weights kept unless ``recompute``), or by autograd directly with
        ``chunk_backward="autograd"`` or no gradient wanted; in the node layout with
        ``nodes`` (``h`` in ``au_perm`` column order). With ``shared_mlp`` (a training
        step's stored chunks) the radial weights and the padded ``Y`` are formed by
        autograd and the tensor product is a :class:`_TriFunction`."""
        if shared_mlp:
            geo: _PadPlan | _EdgeRows
            if nodes:
                geo = self.pad_plan(src, dst, n_nodes)
                y, edge_radial = geo.pad(sh), geo.pad(edge_radial)
            else:
                geo, y = _EdgeRows(src, dst, n_nodes), sh
            weights = self.radial_weights(radial, edge_radial, nodes=nodes)
            if nodes:  # each path's weights one contiguous matrix (see nodes_weights)
                weights = _PathOrder.apply(self, weights, True)
            sums = _TriFunction.apply(self, geo, sink, h, y, weights)
        elif self.chunk_backward == "manual" and torch.is_grad_enabled():
            sums = _ChunkFunction.apply(
                self,
                radial,
                n_nodes,
                sink,
                not recompute,
                nodes,
                h,
                sh,
                edge_radial,
                src,
                dst,
                *radial.weights,
            )
        else:
            args = (radial, h, sh, edge_radial, src, dst, n_nodes, nodes)
            sums = self._sums(*args, sink=sink)[0]
        perm = self.perm
        assert isinstance(perm, torch.Tensor)
        out = sums.index_select(1, perm)
        return out if post is None else post(out)
