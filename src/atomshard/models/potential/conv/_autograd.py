"""The autograd functions of the fused convolution.

A chunk of edges is one :class:`_ChunkFunction` whose backward is written by hand (see its
docstring). The chunks of one call gather rows of the same node features ``h``; instead
of one ``[n_local, width]`` gradient per chunk they add theirs into one shared buffer
(:class:`_RowSink`), which :class:`_Source`, their common input, hands on once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from atomshard.utils.process import release_free_heap


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


def _engine_needs(tensors: Sequence[torch.Tensor]) -> list[bool]:
    """Whether the running backward pass wants a gradient for each of ``tensors`` (leaves
    that require grad): a force evaluation (``autograd.grad(E, positions)``) does not want
    the parameters', a training step does. Falls back to "yes" where torch cannot tell."""
    return [_engine_reaches(t) for t in tensors]


def _engine_reaches(t: torch.Tensor) -> bool:
    """Whether the running backward pass wants a gradient for ``t`` (see
    :func:`_engine_needs`, which asks it for the MLP's matrices; this for the chunk's
    other inputs)."""
    if not t.requires_grad:
        return False
    try:
        node = torch.autograd.graph.get_gradient_edge(t).node
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):
        return True


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


class _EdgeRows:
    """Where a chunk's per-edge rows come from and go to in the edge layout (the node
    layout's counterpart is its ``_PadPlan``)."""

    __slots__ = ("dst", "n_nodes", "src")

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, n_nodes: int) -> None:
        self.src, self.dst, self.n_nodes = src, dst, n_nodes


def _add_terms(terms: list[torch.Tensor | None]) -> torch.Tensor | None:
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out.add_(t)
    return out


class _ChunkGrad(torch.autograd.Function):
    """The first backward of a chunk's tensor product, itself differentiable: what a force
    loss needs (``create_graph``), from the same fused kernels as the forward.

    The chunk's node sums ``T(h, y, w)`` are linear in each of the node features ``h``, the
    (padded) spherical harmonics ``y`` and the radial weights ``w``. Its backward, for the
    node sums' gradient ``g``, is the three maps ``B_h(g, y, w)``, ``B_y(g, h, w)`` and
    ``B_w(g, h, y)`` (:meth:`FusedUVUConvolution._tri_grads`, the hand-written backward of
    the inference path), so the backward of *that*, for cotangents ``(a_h, a_y, a_w)`` of
    its three outputs, is again made of ``T`` and ``B`` with one argument replaced::

        d/dg = T(a_h, y, w) + T(h, a_y, w) + T(h, y, a_w)
        d/dh = B_h(g, a_y, w) + B_h(g, y, a_w)
        d/dy = B_y(g, a_h, w) + B_y(g, h, a_w)
        d/dw = B_w(g, a_h, y) + B_w(g, h, a_y)

    In the edge layout that is three forward and three backward calls (each backward
    call forming two of its three outputs, :func:`_substituted`); the node layout forms
    the four in one pass over the paths, sharing ``C^T g`` and the per-slot products
    between them (``FusedUVUConvolution._chunk_nodes_double``). Either way no per-edge
    temporary is kept between the passes and there is no autograd graph of the chunk's
    elementwise products. Differentiable once more only through autograd's
    refusal (``once_differentiable``): a third derivative is not a training need.
    """

    @staticmethod
    def forward(ctx, conv, geo, need, grad, h, y, w):  # type: ignore[no-untyped-def]
        ctx.conv, ctx.geo = conv, geo
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(grad, h, y, w)
        # an output ``need`` leaves out is an empty tensor (never used)
        outs = conv._tri_grads(geo, grad, h, y, w, need)
        return tuple(grad.new_empty(0) if o is None else o for o in outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, a_h, a_y, a_w):  # type: ignore[no-untyped-def]
        grad, h, y, w = ctx.saved_tensors
        conv, geo = ctx.conv, ctx.geo
        # what the running pass reaches: a training step's backward into the parameters
        # (train.parallel.backward_to_parameters) does not reach y, the spherical
        # harmonics, which depend on the positions alone
        need_g, need_h, need_y, need_w = (
            n and e for n, e in zip(ctx.needs_input_grad[3:7], _engine_needs([grad, h, y, w]))
        )
        need = (need_g, need_h, need_y, need_w)
        out = conv._tri_double(geo, grad, h, y, w, (a_h, a_y, a_w), need)
        return (None, None, None, *out)


class _PathOrder(torch.autograd.Function):
    """Node-layout radial weights ``[n_slots, weight_numel]`` (``hidden @ last`` of
    :meth:`FusedUVUConvolution.radial_hidden` with ``nodes``) to the flat path-major order
    of :meth:`NodeLayout.nodes_weights` (each path's ``[n_slots, u]`` contiguous) with
    ``major``, or back without: a copy, whose backward is the inverse copy, itself
    differentiable again."""

    @staticmethod
    def forward(ctx, conv, values, major):  # type: ignore[no-untyped-def]
        ctx.conv, ctx.major = conv, major
        return conv.path_order(values, major)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        return None, _PathOrder.apply(ctx.conv, grad, not ctx.major), None


class _TriFunction(torch.autograd.Function):
    """A stored chunk's node sums ``T(h, y, w)`` from inputs that autograd formed: the
    (padded) spherical harmonics ``y`` and the radial weights ``w`` (the MLP run by
    autograd, on the slots in the node layout).

    Used for a training step's stored chunks (:meth:`FusedUVUConvolution._node_chunk`):
    the radial MLP then has one autograd graph, shared by the force backward and the
    loss's backward, instead of being run again inside each (:class:`_ChunkFunction`
    re-forms it under ``create_graph`` and once more in the loss's backward, and the
    gradients of its largest matrix are formed twice). The backward is a :class:`_ChunkGrad`
    under ``create_graph``, else the hand-written backward directly; either forms only
    the gradients the running pass reaches (a training step's does not reach ``y``).
    Autograd keeps the MLP's hidden activations, ``[n_edges, hidden]`` per layer, next
    to the radial weights a stored chunk keeps anyway; eval mode and recomputed chunks
    (large systems) keep the :class:`_ChunkFunction` path, which keeps neither.
    """

    @staticmethod
    def forward(ctx, conv, geo, sink, h, y, w):  # type: ignore[no-untyped-def]
        ctx.conv, ctx.geo, ctx.sink = conv, geo, sink
        ctx.h_shape = h.shape
        ctx.save_for_backward(h, y, w)
        return conv._tri_sums(geo, h, y, w)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        h, y, w = ctx.saved_tensors
        conv, geo = ctx.conv, ctx.geo
        need = tuple(
            bool(n and _engine_reaches(t)) for n, t in zip(ctx.needs_input_grad[3:6], (h, y, w))
        )
        if not any(need):
            return (None,) * 6
        if torch.is_grad_enabled():  # create_graph (a force loss): see _ChunkGrad
            g_h, g_y, g_w = _ChunkGrad.apply(conv, geo, need, grad, h, y, w)
        elif ctx.sink is not None:  # several chunks: the rows' gradients into the sink
            g_rows, g_y, g_w = conv._tri_grads(geo, grad, h, y, w, need, rows=True)
            g_h = _rows_grad(ctx, g_rows, geo.src) if need[0] else None
        else:
            g_h, g_y, g_w = conv._tri_grads(geo, grad, h, y, w, need)
        g_h, g_y, g_w = (g if n else None for g, n in zip((g_h, g_y, g_w), need))
        return None, None, None, g_h, g_y, g_w


def _substituted(  # type: ignore[no-untyped-def]
    conv,
    geo: Any,
    grad: torch.Tensor,
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cot: tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None],
    need: tuple[bool, bool, bool, bool],
) -> tuple[torch.Tensor | None, ...]:
    """:class:`_ChunkGrad`'s backward from three calls of the forward and three of the
    backward (see there), each with one argument replaced by its cotangent."""
    h, y, w = inputs
    a_h, a_y, a_w = cot
    need_g, need_h, need_y, need_w = need
    g_g = None
    if need_g:
        g_g = _add_terms(
            [
                None if a_h is None else conv._tri_sums(geo, a_h, y, w),
                None if a_y is None else conv._tri_sums(geo, h, a_y, w),
                None if a_w is None else conv._tri_sums(geo, h, y, a_w),
            ]
        )
    parts_h: list[torch.Tensor | None] = []
    parts_y: list[torch.Tensor | None] = []
    parts_w: list[torch.Tensor | None] = []
    if a_h is not None and (need_y or need_w):
        _, gy, gw = conv._tri_grads(geo, grad, a_h, y, w, (False, need_y, need_w))
        parts_y.append(gy)
        parts_w.append(gw)
    if a_y is not None and (need_h or need_w):
        gh, _, gw = conv._tri_grads(geo, grad, h, a_y, w, (need_h, False, need_w))
        parts_h.append(gh)
        parts_w.append(gw)
    if a_w is not None and (need_h or need_y):
        gh, gy, _ = conv._tri_grads(geo, grad, h, y, a_w, (need_h, need_y, False))
        parts_h.append(gh)
        parts_y.append(gy)
    return (
        g_g,
        _add_terms(parts_h) if need_h else None,
        _add_terms(parts_y) if need_y else None,
        _add_terms(parts_w) if need_w else None,
    )


def _differentiable_grads(  # type: ignore[no-untyped-def]
    ctx, grad: torch.Tensor, saved: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor | None, ...]:
    """The backward of :class:`_ChunkFunction` under ``create_graph`` (a force loss), as a
    differentiable graph: the radial weights re-formed by autograd (the MLP is small), the
    tensor product's backward a :class:`_ChunkGrad`, whose own backward uses the fused
    kernels again; the MLP's part of the gradient by autograd. ``saved``: the chunk's
    ``ctx.saved_tensors``, unpacked once by the caller (inside a layer checkpoint a saved
    tensor may be unpacked only once per backward)."""
    h, sh, edge_radial, src, dst, *_ = saved
    conv, radial, matrices = ctx.conv, ctx.radial, ctx.matrices
    # only what this backward pass reaches: a force evaluation under create_graph
    # (autograd.grad(E, positions)) wants neither the MLP's matrices nor, in the first
    # layer, whose node features come from the species alone, h
    need_h, need_sh, need_er = ctx.needs_input_grad[6:9]
    need_h = need_h and _engine_needs([h])[0]
    need_m = [n and e for n, e in zip(ctx.needs_input_grad[11:], _engine_needs(matrices))]
    geo: Any
    if ctx.nodes:
        geo = conv.pad_plan(src, dst, ctx.n_nodes)
        # [n_slots, weight_numel] (see _group_weights): one product to differentiate
        weights = conv.radial_weights(radial, geo.pad(edge_radial), matrices, nodes=True)
        y = geo.pad(sh)
    else:
        geo = _EdgeRows(src, dst, ctx.n_nodes)
        weights = conv.radial_weights(radial, edge_radial, matrices)
        y = sh
    g_h, g_y, g_w = _ChunkGrad.apply(conv, geo, (need_h, need_sh, True), grad, h, y, weights)
    g_sh = None
    if need_sh:
        g_sh = geo.unpad(g_y) if ctx.nodes else g_y
    leaves = ([edge_radial] if need_er else []) + [m for m, n in zip(matrices, need_m) if n]
    got = iter(
        torch.autograd.grad(weights, leaves, g_w, create_graph=True, allow_unused=True)
        if leaves and weights.requires_grad
        else [None] * len(leaves)
    )
    g_er = next(got) if need_er else None
    g_mats = [next(got) if n else None for n in need_m]
    return (None,) * 6 + (g_h if need_h else None, g_sh, g_er, None, None, *g_mats)


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
    activations is kept between the passes (autograd would keep them all, a sizeable
    share of a step's memory). Under ``create_graph`` (a force loss) the backward is a
    differentiable graph instead (:func:`_differentiable_grads`): the MLP by autograd, the
    tensor product's backward a :class:`_ChunkGrad` whose own backward again runs the
    fused kernels.
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
        if torch.is_grad_enabled():  # create_graph (a force loss): see _ChunkGrad
            return _differentiable_grads(ctx, grad, (h, sh, edge_radial, src, dst))
        need_m = _engine_needs(matrices)
        # a training step's backward into the parameters (the loss's gradient through
        # this forward) reaches neither sh nor, unless the radial basis is trainable, the
        # radial basis: both depend on the positions alone
        need_sh = need_sh and _engine_reaches(sh)
        need_er = need_er and _engine_reaches(edge_radial)
        plan = conv.pad_plan(src, dst, ctx.n_nodes) if ctx.nodes else None
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
            g_rows, g_y, g_w = conv._chunk_nodes_grads(
                grad, h, y_t, weights.detach(), plan, (need_h, need_sh, True)
            )
            g_sh = plan.unpad(g_y) if g_y is not None else None
            rows = plan.src
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
