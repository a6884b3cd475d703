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

The modules, by concern: :mod:`._paths` (the paths grouped, the 3j blocks),
:mod:`._edges` and :mod:`._nodes` (the two layouts, forward and hand-written backward),
:mod:`._autograd` (the chunk's autograd function and the shared row gradient),
:mod:`._overlap` (the halo exchange overlapped with interior nodes), :mod:`._fused` (the
module and its chunk driver) and :mod:`._settings` (the run-time knobs,
:class:`ConvSettings`).
"""

from atomshard.models.potential.conv._autograd import _ChunkFunction, _engine_needs
from atomshard.models.potential.conv._edges import _NodeSums
from atomshard.models.potential.conv._fused import FusedUVUConvolution
from atomshard.models.potential.conv._nodes import _PadPlan
from atomshard.models.potential.conv._overlap import OverlapPlan
from atomshard.models.potential.conv._settings import (
    AUTO_CHUNK_BYTES,
    AUTO_RECOMPUTE_BYTES,
    CHUNK_BACKWARDS,
    CONVOLUTIONS,
    DEFAULT_CHUNK_EDGES,
    DEFAULT_LAYOUT,
    LAYOUTS,
    MAX_CHUNK_PADDING,
    MAX_NODE_PADDING,
    MIN_AUTO_CHUNK_EDGES,
    SORT_NODE_PADDING,
    ConvSettings,
)

__all__ = [
    "AUTO_CHUNK_BYTES",
    "AUTO_RECOMPUTE_BYTES",
    "CHUNK_BACKWARDS",
    "CONVOLUTIONS",
    "DEFAULT_CHUNK_EDGES",
    "DEFAULT_LAYOUT",
    "LAYOUTS",
    "MAX_CHUNK_PADDING",
    "MAX_NODE_PADDING",
    "MIN_AUTO_CHUNK_EDGES",
    "SORT_NODE_PADDING",
    "ConvSettings",
    "FusedUVUConvolution",
    "OverlapPlan",
    "_ChunkFunction",
    "_NodeSums",
    "_PadPlan",
    "_engine_needs",
]
