"""Building blocks of the Allegro potential: bias-free scaled MLPs, the tensor-track
irreps plan and the strided Clebsch–Gordan tensor product of one edge with its centre
atom's environment.

Tensors on the tensor track are *strided*: ``[n_edges, n_tensor, dim]`` where ``dim``
runs over the components of one copy of each irrep (every irrep has multiplicity one;
the channels are the middle axis).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from e3nn import o3
from torch import nn

from atomshard.nn.activations import SiLU

#: ``silu`` is atomshard.nn.activations.SiLU: torch's values and first derivatives, a
#: second derivative (force training) that keeps two tensors instead of five
ACTIVATION_MODULES = {"silu": SiLU, "mish": nn.Mish, "gelu": nn.GELU, "tanh": nn.Tanh}


class ScalarMLP(nn.Module):
    """Bias-free MLP ``x -> a_L W_L ... act(a_1 x W_1)`` with fixed scales ``a_k``.

    ``a_k = g_k / sqrt(fan)``: ``fan`` is the layer's input width (forward normalisation)
    or output width, ``g_k = sqrt(2)`` where an activation is involved and 1 otherwise
    (the first layer forward, the last backward, every layer of a linear MLP). A linear
    MLP of several layers multiplies its weight matrices first (one matmul per call).

    Attributes:
        weights: ``weights[k]`` is ``[width_k, width_{k+1}]``.
    """

    def __init__(
        self,
        widths: list[int],
        activation: str | None,
        *,
        forward_normalize: bool = True,
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"an MLP needs input and output widths, got {widths}")
        self.widths = [int(w) for w in widths]
        self.activation_name = activation
        n = len(widths) - 1
        self.alphas: list[float] = []
        for k, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
            if forward_normalize:
                gain = 1.0 if activation is None or k == 0 else math.sqrt(2.0)
                fan = w_in
            else:
                gain = 1.0 if activation is None or k == n - 1 else math.sqrt(2.0)
                fan = w_out
            self.alphas.append(gain / math.sqrt(fan))
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(w_in, w_out).uniform_(-math.sqrt(3.0), math.sqrt(3.0)))
            for w_in, w_out in itertools.pairwise(widths)
        )
        self.act = ACTIVATION_MODULES[activation]() if activation is not None else None
        self.collapsed = activation is None and n > 1

    @property
    def out_dim(self) -> int:
        return self.widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``x: [n, widths[0]]`` -> ``[n, widths[-1]]``."""
        if self.collapsed:
            w = torch.linalg.multi_dot(list(self.weights)) * math.prod(self.alphas)
            return x @ w
        last = len(self.weights) - 1
        for k, (w, a) in enumerate(zip(self.weights, self.alphas, strict=True)):
            x = x @ (w * a)
            if k < last and self.act is not None:
                x = self.act(x)
        return x


def tensor_track_irreps(
    sh_irreps: o3.Irreps, l_max: int, parity: bool, n_layers: int
) -> list[o3.Irreps]:
    """Irreps of the tensor track before and after each layer (``n_layers + 1`` entries).

    Layer ``t`` couples its input with the environment (irreps of the spherical
    harmonics) into every allowed irrep it can reach (scalars only after the last
    layer); irreps that cannot lead to the final scalars are then pruned, last layer
    first. Allowed: both parities of ``l <= l_max`` (``parity``) or the spherical
    harmonics' own irreps. The order (``l`` up, even before odd) fixes the layout.
    """
    env = o3.Irreps([(1, ir) for _, ir in sh_irreps])
    if parity:
        allowed = o3.Irreps([(1, (l, p)) for l in range(l_max + 1) for p in (1, -1)])
    else:
        allowed = env
    scalar = o3.Irreps([(1, (0, 1))])

    def reachable(arg: o3.Irreps, ir: o3.Irrep) -> bool:
        return any(ir in a * e for _, a in arg for _, e in env)

    plan = [env]
    for t in range(n_layers):
        target = scalar if t == n_layers - 1 else allowed
        plan.append(o3.Irreps([(1, ir) for _, ir in target if reachable(plan[-1], ir)]))
    pruned = [plan[-1]]
    for arg in reversed(plan[:-1]):
        out = pruned[-1]
        keep = [(1, a) for _, a in arg if any(any(o in out for o in a * e) for _, e in env)]
        pruned.append(o3.Irreps(keep))
    return list(reversed(pruned))


def tp_paths(
    irreps_1: o3.Irreps, irreps_2: o3.Irreps, irreps_out: o3.Irreps
) -> list[tuple[int, int, int]]:
    """``(i_1, i_2, i_out)`` for every allowed coupling, output irrep outermost."""
    return [
        (i1, i2, io)
        for io, (_, ir_out) in enumerate(irreps_out)
        for i1, (_, ir1) in enumerate(irreps_1)
        for i2, (_, ir2) in enumerate(irreps_2)
        if ir_out in ir1 * ir2
    ]


def coupling_tensor(
    irreps_1: o3.Irreps, irreps_2: o3.Irreps, irreps_out: o3.Irreps
) -> torch.Tensor:
    """``C[p, i, j, k]``: the Wigner-3j symbol of path ``p`` times ``sqrt(2 l_out + 1)``
    ("component" normalisation), placed at the paths' component offsets (float64)."""
    paths = tp_paths(irreps_1, irreps_2, irreps_out)
    c = torch.zeros(len(paths), irreps_1.dim, irreps_2.dim, irreps_out.dim, dtype=torch.float64)
    s1, s2, so = irreps_1.slices(), irreps_2.slices(), irreps_out.slices()
    for p, (i1, i2, io) in enumerate(paths):
        l1, l2, lo = irreps_1[i1].ir.l, irreps_2[i2].ir.l, irreps_out[io].ir.l
        w3j = o3.wigner_3j(l1, l2, lo, dtype=torch.float64) * math.sqrt(2 * lo + 1)
        c[p, s1[i1], s2[i2], so[io]] = w3j
    return c


#: edges per block of the tensor products are chosen so that one block's outer products
#: ``[n_tensor, block, dim_1 * dim_2]`` hold about this many values (cache-sized)
BLOCK_VALUES = 1 << 20


class _ChannelBilinear(torch.autograd.Function):
    """``out[e, u, k] = Σ_{i,j} w[u, i, j, k] a[e, u, i] b[r(e), u, j]`` (``r(e) = index[e]``,
    or ``e`` without an index), edge block by edge block; only ``a``, ``b`` and ``w`` are
    kept for the backward pass (never the outer products nor the gathered rows of ``b``),
    and the backward is built from the same operation (with ``w``'s axes permuted), so
    it can itself be differentiated (forces inside a training loss)."""

    @staticmethod
    def forward(
        ctx: Any,
        a: torch.Tensor,
        b: torch.Tensor,
        w: torch.Tensor,
        index: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.index = index
        ctx.save_for_backward(a, b, w)
        return _bilinear_blocks(a, b, w, index)

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        a, b, w = ctx.saved_tensors
        index = ctx.index
        ga = gb = gw = None
        if ctx.needs_input_grad[0]:  # Σ_{k,j} w[u,i,j,k] g_k b_j
            ga = channel_bilinear(grad, b, w.permute(0, 3, 2, 1), index)
        if ctx.needs_input_grad[1]:  # Σ_{i,k} w[u,i,j,k] a_i g_k, summed into b's rows
            gb = channel_bilinear(a, grad, w.permute(0, 1, 3, 2))
            if index is not None:
                gb = torch.zeros_like(b).index_add(0, index, gb)
        if ctx.needs_input_grad[2]:  # Σ_e a_i b_j g_k
            n_e, u, d1 = a.shape
            d2, dk = b.shape[2], grad.shape[2]
            rows = b if index is None else b.index_select(0, index)
            outer = (a.unsqueeze(-1) * rows.unsqueeze(-2)).reshape(n_e, u, d1 * d2)
            gw = torch.bmm(outer.permute(1, 2, 0), grad.transpose(0, 1))
            gw = gw.reshape(u, d1, d2, dk)
        return ga, gb, gw, None


def _bilinear_blocks(
    a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, index: torch.Tensor | None
) -> torch.Tensor:
    n_e, u, d1 = a.shape
    d2, dk = b.shape[2], w.shape[3]
    wm = w.reshape(u, d1 * d2, dk)
    # only the (i, j) pairs some weight couples (exact: the others add zero); worth it
    # where most pairs are unused, e.g. the last layer, whose scalar output couples i = j
    used = torch.nonzero(w.detach().abs().sum(dim=(0, 3)).reshape(-1)).squeeze(1)
    sparse = used.numel() <= d1 * d2 // 2
    if sparse:
        i_of, j_of = used // d2, used % d2
        wm = wm.index_select(1, used)
    n_pairs = wm.shape[1]
    out = a.new_empty(n_e, u, dk)
    step = max(1, BLOCK_VALUES // max(u * n_pairs, 1))
    for e0 in range(0, n_e, step):
        e1 = min(e0 + step, n_e)
        rows = b[e0:e1] if index is None else b.index_select(0, index[e0:e1])
        if sparse:
            outer = a[e0:e1].index_select(2, i_of) * rows.index_select(2, j_of)
        else:
            outer = (a[e0:e1, :, :, None] * rows[:, :, None, :]).reshape(e1 - e0, u, n_pairs)
        # [u, block, pairs] @ [u, pairs, k]: the block's transposes stay in cache
        out[e0:e1] = torch.bmm(outer.transpose(0, 1), wm).transpose(0, 1)
    return out


def channel_bilinear(
    a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, index: torch.Tensor | None = None
) -> torch.Tensor:
    """``out[e, u, k] = Σ_{i,j} w[u, i, j, k] a[e, u, i] b[r(e), u, j]`` (one weight tensor
    per channel ``u``; ``r(e) = index[e]``, or ``e`` without an index).

    Shapes:
        a: ``[n_edges, u, d1]``, b: ``[n_rows, u, d2]`` (``n_rows = n_edges`` without an
        index), w: ``[u, d1, d2, dk]``, index: ``[n_edges]`` int64 or None;
        returns ``[n_edges, u, dk]``
    """
    w = w.contiguous()
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or w.requires_grad):
        return _ChannelBilinear.apply(a.contiguous(), b.contiguous(), w, index)
    return _bilinear_blocks(a.contiguous(), b.contiguous(), w, index)


class EdgeTensorProduct(nn.Module):
    """The Allegro tensor product of an edge's tensor features with its centre atom's
    environment: ``out[e, u, k] = Σ_{p,i,j} w[u, p] C[p, i, j, k] x[e, u, i] env[e, u, j]``
    (``w[p]`` shared by all channels without path-channel coupling).

    Attributes:
        weights: ``[n_tensor, n_paths]`` (coupled) or ``[n_paths]``.
    """

    coupling: torch.Tensor

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_env: o3.Irreps,
        irreps_out: o3.Irreps,
        n_tensor: int,
        *,
        path_channel_coupling: bool = True,
    ) -> None:
        super().__init__()
        self.irreps_in, self.irreps_env, self.irreps_out = irreps_in, irreps_env, irreps_out
        self.n_tensor = int(n_tensor)
        self.path_channel_coupling = path_channel_coupling
        c = coupling_tensor(irreps_in, irreps_env, irreps_out)
        self.n_paths = c.shape[0]
        if self.n_paths == 0:
            raise ValueError(f"no tensor-product path {irreps_in} x {irreps_env} -> {irreps_out}")
        self.register_buffer("coupling", c, persistent=False)
        shape = (self.n_tensor, self.n_paths) if path_channel_coupling else (self.n_paths,)
        self.weights = nn.Parameter(torch.empty(shape).uniform_(-math.sqrt(3.0), math.sqrt(3.0)))

    def path_weights(self, dtype: torch.dtype) -> torch.Tensor:
        """``Σ_p w[u, p] C[p]`` as ``[n_tensor, dim_in, dim_env, dim_out]``."""
        u = self.n_tensor
        d1, d2, do = self.irreps_in.dim, self.irreps_env.dim, self.irreps_out.dim
        c = self.coupling.to(dtype).reshape(self.n_paths, d1 * d2 * do)
        w = (self.weights @ c).reshape(-1, d1, d2, do)
        return w if self.path_channel_coupling else w.expand(u, d1, d2, do)

    def forward(self, x: torch.Tensor, env: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """Shapes: ``x: [n_edges, n_tensor, dim_in]``, ``env: [n_centres, n_tensor, dim_env]``
        (per centre atom), ``centre: [n_edges]`` -> ``[n_edges, n_tensor, dim_out]``."""
        return channel_bilinear(x, env, self.path_weights(x.dtype), centre)
