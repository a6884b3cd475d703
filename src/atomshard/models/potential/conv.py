"""A specialised ``uvu`` convolution: gather, tensor product, weights and scatter in edge chunks.

The NequIP convolution of one layer is, for every edge ``k = (src -> dst)`` and every path
``p = (x irrep l1, Y irrep l2 -> out irrep l3)`` of the e3nn ``TensorProduct`` it replaces::

    m_k[p, u, c] = pw_p w_k[p, u] Σ_{a,b} C^{l1 l2 l3}[a, b, c] h[src_k, l1, u, a] Y_k[l2, b]
    agg[i] = Σ_{k: dst_k = i} m_k

with ``C`` e3nn's Wigner 3j symbol (``o3.wigner_3j``) and ``pw_p`` the e3nn instruction's
``path_weight`` (irrep and path normalisation), read from the ``TensorProduct`` object, so
the two paths agree to round-off by construction.

Instead of e3nn's generic code (one broadcast product and sum per path over a
``[E, u, d1, d2]`` outer product), the paths are grouped by the node irrep ``l1`` they read:

1. ``M_k = Y_k · C_g``: one small matmul per group gives, per edge, the matrix
   ``[d1, K_g]`` that maps the ``d1`` components of ``h`` to all ``K_g`` output components
   of the group's paths (3j symbols and path weights folded into a dense ``[dim Y, d1 K_g]``
   constant);
2. ``o_k = h[src_k]_g · M_k``: a batched ``[u, d1] @ [d1, K_g]`` product per edge
   (an outer product for scalars);
3. ``o_k *= w_k``: the radial weights, expanded from paths to output components;
4. ``agg_g[dst_k] += o_k``: summed straight into per-node sums (on the CPU a product with
   the chunk's sparse incidence matrix, :class:`_NodeSums`), so the full ``[E, Σ u d3]``
   message tensor never exists; the per-group node sums are permuted into the e3nn output
   layout on the ``N``-row side at the end.

That is the *edge layout* (one row per edge). The *node layout*
(:attr:`~FusedUVUConvolution.layout`, the default on the CPU where padding stays small)
puts a chunk's edges into ``[nodes, in-degree]`` slots (:class:`_PadPlan`) and reorders
the contraction so that the sum over a node's edges is the inner dimension of one batched
product per path::

    z_p[s] = x[s] * w_p[s];   T_p[i] = Σ_{s in row i} Y[s]^T z_p[s];   agg_p[i] = C_p · T_p[i]

(:meth:`FusedUVUConvolution._chunk_nodes`): no per-edge output ``[E, d3, u]``, no scatter,
and the 3j symbols on the node side. Each node irrep's block is gathered as its own
contiguous ``[slots, d1, u]`` tensor and each path's radial weights are one contiguous
``[slots, u]`` matrix, so every per-slot product runs along the channels.

The radial MLP runs inside the same edge chunks. Every chunk is a
:class:`_ChunkFunction` with a hand-written backward
(:meth:`FusedUVUConvolution._chunk_grads`): it re-forms the per-edge ``M_k`` and applies
the transposed products, so none of the product's per-edge temporaries is kept for the
backward pass, and the forward tensor product is not run a second time, as it would be
under :func:`torch.utils.checkpoint.checkpoint`. A stored chunk keeps its radial weights
(and re-runs only the MLP's small hidden layers in the backward); with ``recompute=True``
(``"auto"``, the default: when a layer's radial weights would take more than
:data:`AUTO_RECOMPUTE_BYTES`) a chunk keeps only its inputs (``O(E · (dim Y + n_radial))``,
linear in edges with a small constant) and re-forms the radial weights in the backward.
``chunk_backward="autograd"`` keeps autograd's own backward (and checkpointing) as the
reference the tests compare with.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence

import torch
from e3nn import o3
from torch import nn
from torch.utils.checkpoint import checkpoint

from atomshard.comm import PendingExchange
from atomshard.nn.radial import RadialMLP
from atomshard.utils.process import release_free_heap

#: Edges per chunk when chunks are not recomputed, and the most ``"auto"`` ever takes.
DEFAULT_CHUNK_EDGES = 16384
#: ``chunk_edges="auto"`` with recompute: about this many bytes of per-edge temporaries per
#: chunk (:meth:`FusedUVUConvolution.auto_chunk_edges`), so the chunk's transient memory
#: does not depend on how wide a layer is.
AUTO_CHUNK_BYTES = 384 << 20
#: The fewest edges ``"auto"`` puts in a chunk: below it the ops of a chunk are too small
#: for a second thread (SI config, 4,608 atoms, 2 threads: 1,024-edge chunks 31 s a step,
#: 16,384-edge chunks 18 s; docs/potential.md).
MIN_AUTO_CHUNK_EDGES = 4096
#: ``recompute="auto"`` recomputes a layer's chunks in the backward pass when keeping their
#: radial weights (``n_edges * weight_numel`` values, times ``MAX_NODE_PADDING`` unless the
#: layout is ``"edges"``: the node layout keeps them per slot) would take more than this
#: many bytes, so that all stored weights stay below ``n_layers`` times it whatever the
#: system size. SevenNet-0 (weights 960 per edge): stored up to ≈ 93,000 edges (2,050 quartz
#: atoms); the SI config's widest layer (2,048): up to ≈ 44,000 edges. Node layout,
#: SevenNet-0 1,944 atoms, tcmalloc: stored 3.17–3.44 s at 1.9 GB, recomputed 3.59–3.89 s
#: at 0.77 GB.
AUTO_RECOMPUTE_BYTES = 512 << 20
#: Layouts of a chunk's per-edge work (:attr:`FusedUVUConvolution.layout`).
LAYOUTS = ("auto", "edges", "nodes")
#: The layout a new convolution starts with (:attr:`FusedUVUConvolution.layout`).
DEFAULT_LAYOUT = "auto"
#: ``layout="auto"`` takes the node layout while its padded slots are at most this many
#: times the chunk's edges. At SevenNet-0's 5 Å: rattled α-quartz 1.06, a quartz slab in
#: vacuum 1.16, 3,000-atom amorphous HfO2 1.22 (there 5.9 s a step against 8.7 s with the
#: edge layout, 2 threads).
MAX_NODE_PADDING = 1.5
#: ... and while no single chunk pads by more than this.
MAX_CHUNK_PADDING = 3.0
#: Above this much padding a (serial) call reorders its destination nodes by in-degree
#: before cutting chunks (:meth:`FusedUVUConvolution.forward`), so that a chunk's rows
#: have similar in-degrees. Below it the atoms keep their order, whose spatial locality
#: keeps the gathers of a chunk's sources in cache.
SORT_NODE_PADDING = 1.1


class _Path:
    """One instruction: its class, ``(l1, l2, l3)``, Y slice, offset in the class, weight;
    and, for the node layout, its first output component ``koff`` in the group."""

    def __init__(
        self,
        cls: int,
        ls: tuple[int, int, int],
        y_slice: slice,
        k: int,
        weight: float,
        koff: int = 0,
    ):
        self.cls = cls
        self.ls = ls
        self.y_slice = y_slice
        self.k = k
        self.weight = weight
        self.koff = koff


class _YSet:
    """The paths of one group that read the same Y irrep ``l2`` (node layout): their
    indices in ``FusedUVUConvolution._paths`` and where their weights are among the
    group's (node layout order: paths ``[w_start, w_start + n)``)."""

    def __init__(self, group: int, y_slice: slice, paths: list[int], w_start: int) -> None:
        self.group = group
        self.y_slice = y_slice
        self.paths = paths
        self.n = len(paths)
        self.w = slice(w_start, w_start + self.n)


class _Class:
    """Consecutive paths of one group with the same output dimension ``d3``."""

    def __init__(self, k_start: int, n_paths: int, d3: int, p_start: int) -> None:
        self.k_start = k_start
        self.n_paths = n_paths
        self.d3 = d3
        self.p_start = p_start


class _Group:
    """Paths that read the same node irrep (static layout, Python ints only)."""

    def __init__(
        self, x_index: int, mul: int, d1: int, k_total: int, w_start: int, col_start: int
    ) -> None:
        self.x_index = x_index
        self.mul = mul
        self.d1 = d1
        self.k_total = k_total
        self.n_paths = 0
        self.index = 0
        self.w_start = w_start
        self.col_start = col_start
        self.classes: list[_Class] = []


class _RowSink:
    """Where the chunks of one convolution call add their node-feature gradients."""

    __slots__ = ("grad",)

    def __init__(self) -> None:
        self.grad: torch.Tensor | None = None


class _Source(torch.autograd.Function):
    """Identity on the node features ``h``; its backward hands on the chunks' summed
    gradients from the sink (see :class:`_Gather`), once every chunk has added its own."""

    @staticmethod
    def forward(ctx, h, sink):  # type: ignore[no-untyped-def]
        ctx.sink = sink
        ctx.set_materialize_grads(False)
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        acc, ctx.sink.grad = ctx.sink.grad, None
        if grad is None or acc is None:
            return (acc if grad is None else grad), None
        return grad + acc, None


class _Gather(torch.autograd.Function):
    """``h[index]`` whose backward adds into one shared ``[n_local, width]`` gradient.

    ``index_select``'s own backward allocates and zero-fills a gradient of all of ``h``'s
    rows for every chunk, which autograd then adds up: ``O(n_local)`` memory traffic per
    chunk, so ``O(n_local * n_chunks)`` per layer — quadratic in the system size at a fixed
    chunk size. Here every chunk adds its rows into the sink's one buffer, which
    :class:`_Source` (the chunks' common input) returns after the last chunk. Under
    ``create_graph`` (a force loss) the plain differentiable form is used instead.
    """

    @staticmethod
    def forward(ctx, h, index, sink):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(index)
        ctx.sink = sink
        ctx.rows = h.shape
        return h.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        (index,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: stay differentiable
            return grad.new_zeros(ctx.rows).index_add(0, index, grad), None, None
        sink = ctx.sink
        if sink.grad is None:
            sink.grad = grad.new_zeros(ctx.rows)
        sink.grad.index_add_(0, index, grad)
        return None, None, None


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(a, b)`` for the per-edge products, with the shapes that batched GEMM
    handles badly on the CPU (several times slower than streaming the operands, measured
    with MKL on 16k edges) done as broadcast products: an inner size of 1 (an outer
    product, exact either way) and, on the CPU, one row with an inner size of 2 or 3 (a
    short sum of scaled rows)."""
    k = a.shape[2]
    if k == 1:
        return a * b
    if a.shape[1] == 1 and k <= 3 and a.device.type == "cpu":
        out = a[:, :, 0:1] * b[:, 0:1, :]
        for i in range(1, k):
            out = out.addcmul_(a[:, :, i : i + 1], b[:, i : i + 1, :])
        return out
    return torch.bmm(a, b)


class _NodeSums:
    """``agg[dst_k] += part_k`` for one chunk's per-edge parts (``dst`` sorted).

    On the CPU, outside autograd (the forward of the hand-written Functions, inference) and
    in float32/float64, the sums are a product with the chunk's ``[n_nodes, n_edges]`` CSR
    incidence matrix (``torch.sparse`` on MKL): each node's row is summed in edge order (on
    this torch build bitwise equal to ``index_add_``), but both threads take part, where
    ``index_add_`` barely uses the second (``[16351, 640] -> [361, 640]``: 1.10 against
    1.60 ms; SevenNet-0 576 atoms 1.54 -> 1.46 s a step, interleaved). Elsewhere (autograd
    through the ops, the GPU, bfloat16, which MKL's sparse product does not take) it is
    ``index_add_``.
    """

    def __init__(self, dst: torch.Tensor, n_nodes: int, dtype: torch.dtype) -> None:
        self.dst, self.n_nodes = dst, n_nodes
        self.csr: torch.Tensor | None = None
        n_edges = dst.shape[0]
        if (
            n_edges > 0
            and dst.device.type == "cpu"
            and dtype in (torch.float32, torch.float64)
            and not torch.is_grad_enabled()
        ):
            crow = torch.zeros(n_nodes + 1, dtype=torch.int64)
            torch.cumsum(torch.bincount(dst, minlength=n_nodes), 0, out=crow[1:])
            col = torch.arange(n_edges)
            with warnings.catch_warnings():  # torch's once-per-process "CSR is beta" notice
                warnings.simplefilter("ignore", UserWarning)
                self.csr = torch.sparse_csr_tensor(
                    crow, col, torch.ones(n_edges, dtype=dtype), (n_nodes, n_edges)
                )

    def __call__(self, part: torch.Tensor) -> torch.Tensor:
        if self.csr is not None:
            return self.csr @ part
        return part.new_zeros((self.n_nodes, part.shape[1])).index_add_(0, self.dst, part)


def _engine_needs(tensors: Sequence[torch.Tensor]) -> list[bool]:
    """Whether the running backward pass wants a gradient for each of ``tensors`` (leaves
    that require grad): a force evaluation (``autograd.grad(E, positions)``) does not want
    the parameters', a training step does. Falls back to "yes" where torch cannot tell."""
    needs = []
    for t in tensors:
        if not t.requires_grad:
            needs.append(False)
            continue
        try:
            node = torch.autograd.graph.get_gradient_edge(t).node
            needs.append(bool(torch._C._will_engine_execute_node(node)))
        except (AttributeError, RuntimeError):
            needs.append(True)
    return needs


def _rows_grad(ctx, g_rows: torch.Tensor, src: torch.Tensor) -> torch.Tensor | None:  # type: ignore[no-untyped-def]
    """The gradient of ``h`` from that of its gathered rows ``h[src]``: returned, or added
    into the chunks' shared :class:`_RowSink` (then None)."""
    sink = ctx.sink
    if sink is None:
        return g_rows.new_zeros(ctx.h_shape).index_add_(0, src, g_rows)
    if sink.grad is None:
        sink.grad = g_rows.new_zeros(ctx.h_shape)
    sink.grad.index_add_(0, src, g_rows)
    return None


def _rebuilt_grads(
    run: Callable[[], torch.Tensor],
    grad: torch.Tensor,
    inputs: Sequence[tuple[torch.Tensor, bool]],
) -> list[torch.Tensor | None]:
    """Double backward (``create_graph``, a force loss): the gradients of the inputs that
    are ``True`` in ``inputs``, through the chunk ``run`` rebuilds with autograd, as a
    differentiable graph."""
    with torch.enable_grad():
        out = run()
    wanted = [t for t, need in inputs if need]
    got = iter(torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True))
    return [next(got) if need else None for _, need in inputs]


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
        return self.pad(sh).view(self.n_nodes, self.width, sh.shape[1]).transpose(1, 2)


class _ChunkFunction(torch.autograd.Function):
    """One chunk's node sums (radial MLP, gather, tensor product, weights, scatter) with a
    hand-written backward that keeps only the chunk's inputs — and, for a stored chunk
    (``keep``), the chunk's radial weights.

    Nothing per edge is stored for the backward pass beyond what already exists (``sh``,
    the radial basis, the index vectors) and, with ``keep``, the ``[E, weight_numel]``
    radial weights; the backward re-forms the per-edge 3j products and applies the
    transposed products of the forward (:meth:`FusedUVUConvolution._chunk_grads`), so —
    unlike a checkpointed chunk — the forward tensor product is not run a second time.

    The radial MLP's backward: without ``keep`` its graph is rebuilt (the whole MLP run
    again) and differentiated by autograd. With ``keep`` only its hidden layers are run
    again (``[E, n_radial] -> [E, hidden]``, a small fraction of the MLP's cost: the last
    matrix, ``hidden -> weight_numel``, is most of it); the last matrix's backward is
    written out (``g_hidden = g_w W^T``, ``g_W = hidden^T g_w``), so none of the MLP's
    activations is kept between the passes (autograd would keep them all: SevenNet-0,
    576 atoms, ~140 MB). Under ``create_graph`` (a force loss) the backward instead
    rebuilds the chunk with autograd and differentiates that, so that it can itself be
    differentiated.
    """

    @staticmethod
    def forward(  # type: ignore[no-untyped-def]
        ctx, conv, radial, n_nodes, sink, keep, nodes, h, sh, edge_radial, src, dst, *matrices
    ):
        # the slots are re-formed in the backward (cheap) rather than kept: O(E) indices
        out, weights = conv._sums(radial, h, sh, edge_radial, src, dst, n_nodes, nodes, matrices)
        ctx.nodes = nodes
        ctx.conv, ctx.radial, ctx.n_nodes, ctx.sink = conv, radial, n_nodes, sink
        ctx.matrices = matrices
        ctx.h_shape = h.shape
        ctx.keep = bool(keep)
        kept = (weights,) if keep else ()
        ctx.save_for_backward(h, sh, edge_radial, src, dst, *kept)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        h, sh, edge_radial, src, dst, *kept = ctx.saved_tensors
        conv, radial, matrices = ctx.conv, ctx.radial, ctx.matrices
        none6 = (None,) * 6
        need_h, need_sh, need_er = ctx.needs_input_grad[6:9]
        if torch.is_grad_enabled():  # double backward: differentiate an autograd rebuild
            needs = (need_h, need_sh, need_er, *ctx.needs_input_grad[11:])

            def run() -> torch.Tensor:
                args = (radial, h, sh, edge_radial, src, dst, ctx.n_nodes, ctx.nodes, matrices)
                return conv._sums(*args)[0]

            grads = _rebuilt_grads(run, grad, list(zip((h, sh, edge_radial, *matrices), needs)))
            return (*none6, grads[0], grads[1], grads[2], None, None, *grads[3:])
        need_m = _engine_needs(matrices)
        plan = _PadPlan(src, dst, ctx.n_nodes) if ctx.nodes else None
        with torch.enable_grad():
            er = edge_radial.detach().requires_grad_(need_er)
            er_in = er if plan is None else plan.pad(er)  # the MLP runs on the slots
            mats = [m.detach().requires_grad_(need) for m, need in zip(matrices, need_m)]
            if ctx.keep or plan is not None:
                hidden, last = conv.radial_hidden(radial, er_in, mats, plan is not None)
            if ctx.keep:
                weights = kept[0]
            elif plan is None:
                weights = conv.radial_weights(radial, er_in, mats)
        if plan is None:
            g_rows, g_sh, g_w = conv._chunk_grads(grad, h, sh, weights.detach(), src, dst)
            rows = src
        else:
            if not ctx.keep:  # re-formed in place, outside autograd
                weights = conv.nodes_weights(hidden.detach(), last.detach())
            y_t = plan.y_t(sh)
            g_rows, g_y, g_w = conv._chunk_nodes_grads(grad, h, y_t, weights.detach(), plan)
            g_sh, rows = plan.unpad(g_y), plan.src
        if plan is not None:  # the last matrix's backward by hand, path by path
            need = (hidden.requires_grad, last.requires_grad)
            g_hidden, g_last = conv._nodes_mlp_grads(
                g_w, hidden.detach(), last.detach(), plan.n_slots, need
            )
            outs = [(t, g) for t, g in ((hidden, g_hidden), (last, g_last)) if g is not None]
        elif ctx.keep:  # the last matrix's backward by hand, the hidden layers' by autograd
            outs = []
            if hidden.requires_grad:
                outs.append((hidden, g_w @ last.detach().t()))
            if last.requires_grad:
                outs.append((last, hidden.detach().t() @ g_w))
        else:
            outs = [(weights, g_w)]
        leaves = ([er] if need_er else []) + [m for m, need in zip(mats, need_m) if need]
        got = iter(
            torch.autograd.grad(
                [o for o, _ in outs], leaves, [g for _, g in outs], allow_unused=True
            )
            if leaves
            else ()
        )
        g_er = next(got) if need_er else None
        g_mats = [next(got) if need else None for need in need_m]
        g_h = _rows_grad(ctx, g_rows, rows) if need_h else None
        if not ctx.keep and not h.is_cuda:  # a large system: see release_free_heap
            # every per-edge or per-slot temporary of this backward, before the trim
            if plan is not None:
                del hidden, y_t, g_y
            del weights, g_rows, g_w, outs, er_in, plan
            release_free_heap()
        return (*none6, g_h, g_sh if need_sh else None, g_er, None, None, *g_mats)


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


class FusedUVUConvolution(nn.Module):
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
    """

    def __init__(self, tp: o3.TensorProduct) -> None:
        super().__init__()
        irreps_x, irreps_y, irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        if any(mul != 1 for mul, _ in irreps_y):
            raise ValueError(f"second input must have multiplicity 1, got {irreps_y}")
        if tp.shared_weights:
            raise ValueError("the fused convolution needs per-edge (unshared) weights")
        covered = sorted(ins.i_out for ins in tp.instructions)
        if covered != list(range(len(irreps_out))):
            raise ValueError("every output block needs exactly one instruction")
        self.dim_x = irreps_x.dim
        self.dim_out = irreps_out.dim
        self.weight_numel = tp.weight_numel
        y_slices = irreps_y.slices()
        out_slices = irreps_out.slices()

        # weight offsets of each instruction in e3nn's flat weight layout
        offsets, off = [], 0
        for ins in tp.instructions:
            if ins.connection_mode != "uvu" or not ins.has_weight:
                raise ValueError(f"only weighted 'uvu' instructions are supported, got {ins}")
            offsets.append(off)
            off += irreps_x[ins.i_in1].mul

        self._groups: list[_Group] = []
        self._paths: list[_Path] = []
        self._ysets: list[_YSet] = []
        self._class_shapes: list[tuple[int, int]] = []  # (d1, n d3) of every class
        self._dim_y = irreps_y.dim
        perm = torch.empty(self.dim_out, dtype=torch.int64)
        wperm: list[int] = []
        wperm_nodes: list[int] = []  # the same columns, each group's paths by Y set
        col = 0
        n_classes = 0
        for i1, (mul, ir1) in enumerate(irreps_x):
            members = [k for k, ins in enumerate(tp.instructions) if ins.i_in1 == i1]
            if not members:
                continue
            dim_of = lambda k: irreps_out[tp.instructions[k].i_out].ir.dim  # noqa: E731
            members.sort(key=dim_of)  # stable: runs of equal d3
            d1 = ir1.dim
            k_total = sum(dim_of(k) for k in members)
            grp = _Group(i1, mul, d1, k_total, len(wperm), col)
            koff = 0
            for p, k in enumerate(members):
                ins = tp.instructions[k]
                l2 = irreps_y[ins.i_in2].ir.l
                ir_out = irreps_out[ins.i_out].ir
                d3 = ir_out.dim
                if grp.classes and grp.classes[-1].d3 == d3:
                    grp.classes[-1].n_paths += 1
                else:
                    grp.classes.append(_Class(koff, 1, d3, p))
                cls = grp.classes[-1]
                self._paths.append(
                    _Path(
                        n_classes + len(grp.classes) - 1,
                        (ir1.l, l2, ir_out.l),
                        y_slices[ins.i_in2],
                        koff - cls.k_start,
                        ins.path_weight,
                        koff,
                    )
                )
                # e3nn output element (block i_out, channel u, component c) -> column
                # col + (koff + c) * mul + u of the [K, u] node sums
                u = torch.arange(mul).unsqueeze(1)
                c = torch.arange(d3).unsqueeze(0)
                start = out_slices[ins.i_out].start
                perm[start + (u * d3 + c).reshape(-1)] = (col + (koff + c) * mul + u).reshape(-1)
                koff += d3
            # radial weight columns of the group, [P, u] order
            wperm.extend(offsets[k] + u_ for k in members for u_ in range(mul))
            grp.n_paths = len(members)
            for cls in grp.classes:
                self._class_shapes.append((d1, cls.n_paths * cls.d3))
            n_classes += len(grp.classes)
            grp.index = len(self._groups)
            self._groups.append(grp)
            first = len(self._paths) - len(members)
            mine = self._paths[first:]
            w_off = 0
            for y_start in sorted({path.y_slice.start for path in mine}):
                ps = [p for p, path in enumerate(mine) if path.y_slice.start == y_start]
                y_set = _YSet(grp.index, mine[ps[0]].y_slice, [first + p for p in ps], w_off)
                self._ysets.append(y_set)
                wperm_nodes.extend(offsets[members[p]] + u_ for p in ps for u_ in range(mul))
                w_off += len(ps)
            col += mul * k_total
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("wperm", torch.tensor(wperm, dtype=torch.int64), persistent=False)
        self.register_buffer(
            "wperm_nodes", torch.tensor(wperm_nodes, dtype=torch.int64), persistent=False
        )
        # node layout: each node irrep's block of h as [component a, channel u] instead of
        # e3nn's [u, a], so that the per-slot products run along the channels
        au_perm = torch.arange(self.dim_x)
        for x_slice, mul_ir in zip(irreps_x.slices(), irreps_x):
            mul, d, first = mul_ir.mul, mul_ir.ir.dim, x_slice.start
            a, u_ = torch.arange(d).unsqueeze(1), torch.arange(mul).unsqueeze(0)
            au_perm[first + (a * mul + u_).reshape(-1)] = (first + u_ * d + a).reshape(-1)
        self.register_buffer("au_perm", au_perm, persistent=False)
        self.group_dim = col
        self._x_sizes = [mul_ir.dim for mul_ir in irreps_x]
        self._w_sizes = [grp.n_paths * grp.mul for grp in self._groups]
        # columns of each class's node sums, in the order _chunk concatenates them
        self._part_sizes = [
            cls.n_paths * cls.d3 * grp.mul for grp in self._groups for cls in grp.classes
        ]
        self.load_3j(None)
        #: how chunks get their backward: ``"manual"`` (hand-written, a
        #: :class:`_ChunkFunction`, stored or recomputed) or ``"autograd"`` (the reference:
        #: autograd through the stored chunk's ops; ``torch.utils.checkpoint`` for a
        #: recomputed one, a second forward)
        self.chunk_backward = "manual"
        #: where a chunk's per-edge work is laid out: ``"edges"`` (one row per edge, the
        #: node sums a scatter), ``"nodes"`` (``[n_nodes, in-degree]`` slots, the sums over
        #: a node's edges folded into batched matrix products, :meth:`_chunk_nodes`), or
        #: ``"auto"`` (nodes on the CPU while the padding stays within
        #: :data:`MAX_NODE_PADDING`, else edges). The same numbers to round-off.
        self.layout = DEFAULT_LAYOUT

    @property
    def layout(self) -> str:
        """``"edges"``, ``"nodes"`` or ``"auto"`` (see ``__init__``)."""
        return self._layout

    @layout.setter
    def layout(self, value: str) -> None:
        if value not in LAYOUTS:
            raise ValueError(f"layout={value!r}: choose one of {LAYOUTS}")
        self._layout = value

    @staticmethod
    def _auto_nodes(device: torch.device) -> bool:
        """Whether ``"auto"`` may take the node layout on ``device`` (measured on the CPU
        only)."""
        return device.type == "cpu"

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
        blocks = [
            torch.zeros(self._dim_y, d1, k, dtype=torch.float64) for d1, k in self._class_shapes
        ]
        for i, path in enumerate(self._paths):
            l1, l2, l3 = path.ls
            buf = stored.get(f"_w3j_{l1}_{l2}_{l3}")
            w3j = (
                buf.detach().to("cpu", torch.float64)
                if buf is not None
                else o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
            )  # [d1, d2, d3]
            d3 = 2 * l3 + 1
            blocks[path.cls][path.y_slice, :, path.k : path.k + d3] = path.weight * w3j.permute(
                1, 0, 2
            )
            # node layout: C_p[c, b, a], [d3, d2, d1]
            block = (path.weight * w3j.permute(2, 1, 0)).contiguous()
            old = getattr(self, f"ncg_{i}", None)
            if isinstance(old, torch.Tensor):
                block = block.to(old.device, old.dtype)
            self.register_buffer(f"ncg_{i}", block, persistent=False)
        for c, block in enumerate(blocks):
            old = getattr(self, f"cg_{c}", None)
            like = old if isinstance(old, torch.Tensor) else None
            # per class: M = Y @ cg_c -> [n, d3, d1] per edge
            flat = block.permute(0, 2, 1).reshape(self._dim_y, -1).contiguous()
            if like is not None:
                flat = flat.to(like.device, like.dtype)
            self.register_buffer(f"cg_{c}", flat, persistent=False)

    def _cg(self, g: int, dtype: torch.dtype) -> torch.Tensor:
        """Class ``g``'s 3j block in ``dtype``: a backward pass can run after
        ``torch.func.functional_call`` has put the float32 buffers back (a bfloat16 body,
        atomshard.train.parallel), with the saved tensors still in bfloat16."""
        buf = getattr(self, f"cg_{g}")
        assert isinstance(buf, torch.Tensor)
        return buf if buf.dtype == dtype else buf.to(dtype)

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

    def _chunk(
        self,
        h: torch.Tensor,
        sh: torch.Tensor,
        weights: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        n_nodes: int,
        sink: _RowSink | None = None,
    ) -> torch.Tensor:
        """Node sums ``[n_nodes, group_dim]`` (group layout) of one chunk of edges."""
        n_edges = src.shape[0]
        gathered = h.index_select(0, src) if sink is None else _Gather.apply(h, src, sink)
        # split (not slice): the backward of split is one cat, a slice's is a zero-filled
        # full-size gradient per slice
        xs = gathered.split(self._x_sizes, dim=1)
        ws = weights.split(self._w_sizes, dim=1)
        sums = []
        c = 0
        summer = _NodeSums(dst, n_nodes, h.dtype)
        for grp in self._groups:
            u, d1 = grp.mul, grp.d1
            xg = xs[grp.x_index].reshape(n_edges, u, d1)
            if d1 == 1:
                # scalars: weights first on the small [E, n, u] side, then one broadcast
                # product per run of paths -> [E n, d3, u]
                w_parts = ws[grp.index].split([cls.n_paths * u for cls in grp.classes], dim=1)
                for cls, wc in zip(grp.classes, w_parts):
                    n, d3 = cls.n_paths, cls.d3
                    xw = (xg.reshape(n_edges, 1, u) * wc.reshape(n_edges, n, u)).reshape(
                        n_edges * n, 1, u
                    )
                    m = (sh @ self._cg(c, sh.dtype)).reshape(n_edges * n, d3, 1)
                    sums.append(summer((m * xw).reshape(n_edges, n * d3 * u)))
                    del m, xw
                    c += 1
                continue
            # l1 > 0: per run of paths with equal d3, one [n d3, d1] @ [d1, u] product per
            # edge, then the radial weights on its [n, d3, u] output (batch E, not E n: the
            # products are larger, and the backward's weight gradient reuses this form).
            # x_t stays a transposed view: MKL's batched GEMM takes it as a transposed
            # operand, faster than copying it contiguous first (16k edges, [10,3]@[3,64]:
            # 2.4 ms against 0.9 ms copy + 2.7 ms; and for one-row products too, so plain
            # bmm rather than _bmm's CPU sum of rows)
            x_t = xg.transpose(1, 2)  # [E, d1, u]
            w_parts = ws[grp.index].split([cls.n_paths * u for cls in grp.classes], dim=1)
            for cls, wc in zip(grp.classes, w_parts):
                n, d3 = cls.n_paths, cls.d3
                m = sh @ self._cg(c, sh.dtype)
                c += 1
                o = torch.bmm(m.reshape(n_edges, n * d3, d1), x_t)
                part = (o.reshape(n_edges, n, d3, u) * wc.reshape(n_edges, n, 1, u)).reshape(
                    n_edges, n * d3 * u
                )
                sums.append(summer(part))
                # drop this run's [E, n d3 u] temporaries before the next run makes its own
                # (else two runs' worth are alive at once: the chunk's transient peak)
                del o, part
        return torch.cat(sums, dim=1)

    def _chunk_grads(
        self,
        grad: torch.Tensor,
        h: torch.Tensor,
        sh: torch.Tensor,
        weights: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The hand-written backward of :meth:`_chunk`: from the gradient of the node sums
        ``grad`` (``[n_nodes, group_dim]``), the gradients of the gathered rows
        ``h[src]`` (``[E, dim_x]``), of ``sh`` (``[E, dim_y]``) and of ``weights``
        (``[E, weight_numel]``).

        Per run of paths it re-forms the per-edge 3j products ``M = Y C`` (one small
        matmul) and applies the transposed products of the forward; of the forward's own
        products only ``M x`` of the ``l1 > 0`` runs is redone (their weight gradient needs
        it), not the radial weights' multiply, the scatter or anything after it.
        """
        n_edges = src.shape[0]
        gathered = h.index_select(0, src)
        xs = gathered.split(self._x_sizes, dim=1)
        ws = weights.split(self._w_sizes, dim=1)
        g_parts = grad.split(self._part_sizes, dim=1)
        # the gradients are written into column blocks of their final tensors (no cat at
        # the end: one pass less over [E, weight_numel] and [E, dim_x] per chunk)
        g_gathered = gathered.new_empty((n_edges, self.dim_x))
        g_weights = weights.new_empty((n_edges, self.weight_numel))
        g_xs = g_gathered.split(self._x_sizes, dim=1)
        g_ws = g_weights.split(self._w_sizes, dim=1)
        done = [False] * len(xs)
        g_sh: torch.Tensor | None = None
        c = 0
        for grp in self._groups:
            u, d1 = grp.mul, grp.d1
            xg = xs[grp.x_index].reshape(n_edges, u, d1)
            sizes = [cls.n_paths * u for cls in grp.classes]
            w_parts = ws[grp.index].split(sizes, dim=1)
            gw_parts = g_ws[grp.index].split(sizes, dim=1)
            done[grp.x_index] = True
            if d1 == 1:
                x1 = xg.reshape(n_edges, 1, u)
                g_x = g_xs[grp.x_index]
                for i, (cls, wc, gwc) in enumerate(zip(grp.classes, w_parts, gw_parts)):
                    n, d3 = cls.n_paths, cls.d3
                    cg = self._cg(c, sh.dtype)
                    g = g_parts[c].index_select(0, dst).reshape(n_edges * n, d3, u)
                    c += 1
                    wv = wc.reshape(n_edges, n, u)
                    xw = (x1 * wv).reshape(n_edges * n, u, 1)
                    m = (sh @ cg).reshape(n_edges * n, 1, d3)
                    g_m = torch.bmm(g, xw).reshape(n_edges, n * d3)
                    g_sh = g_m @ cg.t() if g_sh is None else g_sh.addmm_(g_m, cg.t())
                    g_xw = _bmm(m, g).reshape(n_edges, n, u)
                    torch.mul(g_xw, x1, out=gwc.view(n_edges, n, u))
                    if i == 0:
                        torch.sum(g_xw * wv, 1, out=g_x)
                    else:
                        g_x.add_((g_xw * wv).sum(1))
                    del g, g_m, g_xw, xw, m
                continue
            x_t = xg.transpose(1, 2)  # [E, d1, u], a view (see _chunk)
            g_xt: torch.Tensor | None = None
            for cls, wc, gwc in zip(grp.classes, w_parts, gw_parts):
                n, d3 = cls.n_paths, cls.d3
                cg = self._cg(c, sh.dtype)
                g = g_parts[c].index_select(0, dst)
                c += 1
                m = sh @ cg
                # out = (M x) * w per [n, d3, u]: the weight gradient needs M x again (the
                # one forward product redone); the others come from g * w
                mv = m.reshape(n_edges, n * d3, d1)
                gv = g.reshape(n_edges, n, d3, u)
                o = torch.bmm(mv, x_t).reshape(n_edges, n, d3, u)
                torch.sum(gv * o, 2, out=gwc.view(n_edges, n, u))
                del o  # as in _chunk: one run's [E, n d3 u] temporaries alive at a time
                g_o = (gv * wc.reshape(n_edges, n, 1, u)).reshape(n_edges, n * d3, u)
                del g, gv
                g_m = torch.bmm(g_o, xg)
                part = _bmm(mv.transpose(1, 2), g_o)
                g_m = g_m.reshape(n_edges, n * d3 * d1)
                g_sh = g_m @ cg.t() if g_sh is None else g_sh.addmm_(g_m, cg.t())
                g_xt = part if g_xt is None else g_xt.add_(part)
                del g_o, g_m, m, mv, part
            assert g_xt is not None
            g_xs[grp.x_index].view(n_edges, u, d1).copy_(g_xt.transpose(1, 2))
        for g_x, wrote in zip(g_xs, done):
            if not wrote:  # a node irrep no path reads
                g_x.zero_()
        if g_sh is None:
            g_sh = torch.zeros_like(sh)
        return g_gathered, g_sh, g_weights

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
        plan = _PadPlan(src, dst, n_nodes)
        hidden, last = self.radial_hidden(radial, plan.pad(edge_radial), matrices, nodes=True)
        weights = self.nodes_weights(hidden, last)
        return self._chunk_nodes(h, plan.y_t(sh), weights, plan, sink), weights

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

    def _group_weights(self, flat: torch.Tensor, n_slots: int) -> list[torch.Tensor]:
        """The ``[P_g, n_slots, u_g]`` views of a flat node-layout weight tensor."""
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
        slice of one gathered tensor (16k slots, ``[3, 64]`` blocks: 2.9 against 0.56 ms),
        and gathering each irrep's columns is no slower than gathering the rows once. With
        a ``sink`` (autograd through the chunk) the rows are gathered once (:class:`_Gather`)."""
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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The hand-written backward of :meth:`_chunk_nodes`: from the gradient of the node
        sums (``[n_nodes, group_dim]``), the gradients of the gathered rows ``h[plan.src]``
        (``[n_slots, dim_x]``, ``au_perm`` order), of the padded ``Y`` (``[n_slots,
        dim_y]``) and of the flat weights (:meth:`nodes_weights` layout); exactly zero in
        the padding slots, but for ``Y``'s.

        Per path: ``gT = C^T g_agg`` (node side), ``z = x w`` formed again, ``gY = gT z^T``
        and ``gz = Y gT`` (two bmm), then ``gx += gz w`` and ``gw = Σ_a gz x``.
        """
        n, width = plan.n_nodes, plan.width
        n_slots = plan.n_slots
        xs = self._gather_nodes(h, plan.src)
        wg = self._group_weights(weights, n_slots)
        g_weights = weights.new_empty(weights.shape)
        g_wg = self._group_weights(g_weights, n_slots)
        g_xs: list[torch.Tensor | None] = [None] * len(self._x_sizes)
        g_yt = y_t.new_zeros((n, self._dim_y, width))
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
                z = (x * w).view(n, width, d1 * u)
                g_y = (
                    torch.bmm(g_t, z.transpose(1, 2))
                    if g_y is None
                    else g_y.baddbmm_(g_t, z.transpose(1, 2))
                )
                del z
                g_z = torch.bmm(y.transpose(1, 2), g_t).view(n_slots, d1, u)
                g_x = g_xs[grp.x_index]
                if g_x is None:
                    g_xs[grp.x_index] = g_z * w
                else:
                    g_x.addcmul_(g_z, w)
                # gw[s, u] = Σ_a gz[s, a, u] x[s, a, u], one component at a time
                g_w = g_wg[grp.index][ys.w.start + j]
                torch.mul(g_z[:, 0], x[:, 0], out=g_w)
                for a in range(1, d1):
                    g_w.addcmul_(g_z[:, a], x[:, a])
                del g_z
            assert g_y is not None
            g_yt[:, ys.y_slice, :] += g_y  # every group's
        g_cols = [  # a node irrep no path reads gets zeros
            grad.new_zeros((n_slots, size)) if g is None else g.view(n_slots, size)
            for g, size in zip(g_xs, self._x_sizes)
        ]
        g_gathered = g_cols[0] if len(g_cols) == 1 else torch.cat(g_cols, dim=1)
        g_y_all = g_yt.transpose(1, 2).reshape(n_slots, self._dim_y)
        return g_gathered, g_y_all, g_weights

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
        chunk_edges: int | str = "auto",
        recompute: bool | str = "auto",
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
        """
        n_nodes = h.shape[0] if n_out is None else int(n_out)
        n_edges = src.shape[0]
        do_recompute, step = self._settings(n_edges, h.element_size(), chunk_edges, recompute)
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

    def forward_overlapped(
        self,
        h_owned: torch.Tensor,
        pending: PendingExchange,
        sh: torch.Tensor,
        edge_radial: torch.Tensor,
        radial: RadialMLP,
        plan: OverlapPlan,
        *,
        post: Callable[[torch.Tensor], torch.Tensor] | None = None,
        chunk_edges: int | str = "auto",
        recompute: bool | str = "auto",
    ) -> torch.Tensor:
        """:meth:`forward` with the halo exchange in flight during the interior edges.

        ``pending`` is the started exchange of ``h_owned`` (``HaloExchange.start``). The
        destination nodes none of whose edges reads a halo row (``plan.n_inner_nodes``, in
        ``plan``'s node order) are computed from ``h_owned`` while the halo rows travel;
        then ``pending.wait()`` and the other (boundary) nodes. Same chunks, same numbers.

        Shapes:
            h_owned: ``[n_owned, irreps_in1.dim]``
            sh, edge_radial: ``[n_edges, ...]`` in ``plan``'s edge order
            returns: ``[n_owned, irreps_out.dim]`` (or ``post``'s width) in ``plan``'s node
            order (row ``plan.pos[i]`` belongs to owned atom ``i``)
        """
        n_edges = plan.src.shape[0]
        do_recompute, step = self._settings(n_edges, h_owned.element_size(), chunk_edges, recompute)
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

    def _settings(
        self, n_edges: int, itemsize: int, chunk_edges: int | str, recompute: bool | str
    ) -> tuple[bool, int]:
        """Whether chunks are recomputed, and edges per chunk ("auto": by bytes when
        recomputed, their temporaries being the transient peak, else the default)."""
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
        for n0, n_c, sh_c, radial_c, src_c, dst_c in pieces:
            args = (radial, post, h, sh_c, radial_c, src_c, dst_c - n0, n_c, sink, nodes)
            recomputed = do_recompute and torch.is_grad_enabled()
            if recomputed and self.chunk_backward == "autograd":
                outs.append(checkpoint(self._node_chunk, *args, use_reentrant=False))
            else:
                outs.append(self._node_chunk(*args, recompute=recomputed))
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
    ) -> torch.Tensor:
        """One chunk's output rows: a :class:`_ChunkFunction` (hand-written backward; the
        radial weights kept unless ``recompute``), or by autograd directly with
        ``chunk_backward="autograd"`` or no gradient wanted; in the node layout with
        ``nodes`` (``h`` in ``au_perm`` column order)."""
        if self.chunk_backward == "manual" and torch.is_grad_enabled():
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
