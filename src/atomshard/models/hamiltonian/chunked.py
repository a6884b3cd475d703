"""Memory-bounded evaluation of one message-passing layer: edges in chunks.

The plain layer (:class:`~atomshard.models.hamiltonian.layers.NodeUpdate` then
:class:`~atomshard.models.hamiltonian.layers.EdgeUpdate`) materialises, for *all* edges at
once, the Wigner-D matrices ``[n_edges, S, S]``, the ``3E``-channel messages, the hidden
SO(2) features and the transformed messages -- for 3,000 HfO2 atoms at 12 Å (1.8 M edges,
``l_max`` 4) that is tens of GiB. Here the edges go through in chunks of ``chunk``:

* the Wigner-D of a chunk is recomputed from the edge vectors (float64, closed form);
* node update: messages, SO(2) transform and attention logits of the chunk; the softmax
  over each node's incoming edges is accumulated online (running per-node maximum of the
  logits, sums rescaled by ``exp(old max - new max)`` when it grows), and the weighted
  messages are summed into the nodes with ``index_add``;
* edge update: the chunk's new edge embeddings are written into the output tensor.

Only node-sized tensors, the edge embeddings (old and new) and one chunk's temporaries
exist at a time. The result equals the plain layer up to round-off: the softmax is
invariant to the per-node shift, and the maximum is detached as in
:func:`~atomshard.models.hamiltonian.layers.segment_softmax`.

With ``checkpoint=True`` every chunk runs under :func:`torch.utils.checkpoint.checkpoint`
(``use_reentrant=False``): autograd keeps only the chunk's inputs (slices of tensors that
exist anyway) and recomputes its activations in the backward pass, so training memory is
also O(edge embeddings + one chunk) instead of O(all activations of all edges).
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from atomshard.models.hamiltonian.layers import EdgeUpdate, NodeUpdate
from atomshard.nn.wigner import edge_frame_rotation

__all__ = ["chunk_bounds", "chunked_layer"]


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in pieces of at most ``chunk``."""
    step = max(int(chunk), 1) if chunk > 0 else max(n, 1)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _chunk_step(
    node_update: NodeUpdate,
    edge_update: EdgeUpdate,
    l_max: int,
    xn: torch.Tensor,
    x: torch.Tensor,
    e_c: torch.Tensor,
    vec_c: torch.Tensor,
    src_c: torch.Tensor,
    dst_c: torch.Tensor,
    top_old: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk of edges: node-update contributions (unnormalised) and new edge embeddings.

    Shapes:
        xn, x: ``[n_atoms, S, E]``; e_c: ``[c, S, E]``; vec_c: ``[c, 3]`` float64;
        src_c, dst_c: ``[c]``; top_old: ``[n_atoms]`` running maxima (no grad)
        returns: weighted message sum ``[n_atoms, S, E]``, weight sum ``[n_atoms]``, new
        running maxima ``[n_atoms]`` and the chunk's updated edge embeddings ``[c, S, E]``
    """
    rot = edge_frame_rotation(vec_c, l_max).to(x.dtype)
    message = torch.cat([xn.index_select(0, src_c), xn.index_select(0, dst_c), e_c], dim=2)
    m = node_update.transform(message, rot)
    logits = node_update.attention(m[:, 0, :]).squeeze(1)
    if logits.dtype in (torch.bfloat16, torch.float16):
        logits = logits.float()
    top = top_old.scatter_reduce(0, dst_c, logits.detach(), reduce="amax", include_self=True)
    w = torch.exp(logits - top.index_select(0, dst_c))
    weighted = m.to(x.dtype) * w[:, None, None].to(x.dtype)
    contrib = torch.zeros_like(x).index_add(0, dst_c, weighted)
    wsum = torch.zeros(x.shape[0], dtype=w.dtype, device=w.device).index_add(0, dst_c, w)
    en = edge_update.norm(e_c)
    message = torch.cat([x.index_select(0, src_c), x.index_select(0, dst_c), en], dim=2)
    e_out = e_c + edge_update.transform(message, rot)
    return contrib, wsum, top, e_out


def chunked_layer(
    node_update: NodeUpdate,
    edge_update: EdgeUpdate,
    x: torch.Tensor,
    e: torch.Tensor,
    vec: torch.Tensor,
    src: torch.Tensor,
    dst: torch.Tensor,
    *,
    l_max: int,
    chunk: int,
    checkpoint: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(node_update(x, e, ...), edge_update(x, e, ...))`` with edges in chunks.

    Args:
        vec: edge vectors (float64, Å) from which each chunk's Wigner-D is recomputed
        chunk: edges per chunk (``<= 0``: all edges in one chunk)
        checkpoint: recompute each chunk's activations in the backward pass

    Shapes:
        x: ``[n_atoms, S, E]``; e: ``[n_edges, S, E]``; vec: ``[n_edges, 3]``;
        src, dst: ``[n_edges]``; returns ``[n_atoms, S, E]`` and ``[n_edges, S, E]``
    """
    n_atoms = x.shape[0]
    xn = node_update.norm(x)
    acc = torch.zeros_like(x)
    wdtype = torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype
    total = torch.zeros(n_atoms, dtype=wdtype, device=x.device)
    top = torch.full((n_atoms,), -math.inf, dtype=wdtype, device=x.device)
    bounds = chunk_bounds(e.shape[0], chunk)
    # One split (its backward is one concatenation) rather than a slice per chunk (each
    # slice's backward would allocate a zero gradient as large as all edges).
    e_chunks = torch.split(e, [b - a for a, b in bounds]) if bounds else ()
    training = torch.is_grad_enabled()
    # inference writes into one preallocated tensor; with autograd the chunks are
    # concatenated at the end (slice assignment would clone the gradient per chunk)
    e_new = e.new_empty(e.shape) if not training else None
    pieces: list[torch.Tensor] = []
    for (a, b), e_c in zip(bounds, e_chunks, strict=True):
        args = (xn, x, e_c, vec[a:b], src[a:b], dst[a:b], top)
        if checkpoint:
            out = _checkpoint(
                _chunk_step, node_update, edge_update, l_max, *args, use_reentrant=False
            )
        else:
            out = _chunk_step(node_update, edge_update, l_max, *args)
        contrib, wsum, top_new, e_out = out
        with torch.no_grad():
            # nodes without edges so far have top -inf: their (zero) sums scale by 0
            scale = torch.where(
                torch.isfinite(top), torch.exp(top - top_new), torch.zeros_like(top)
            )
        acc = acc * scale[:, None, None].to(acc.dtype) + contrib
        total = total * scale + wsum
        top = top_new
        if e_new is not None:
            e_new[a:b] = e_out
        else:
            pieces.append(e_out)
    if e_new is None:
        e_new = torch.cat(pieces) if pieces else e.new_empty(e.shape)
    # nodes without incoming edges keep x (their sums are exactly zero)
    denom = torch.where(total > 0, total, torch.ones_like(total))
    agg = acc / denom[:, None, None].to(acc.dtype)
    return x + agg, e_new
