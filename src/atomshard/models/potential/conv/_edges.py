"""The edge layout of a fused chunk: one row per edge, the node sums a scatter.

Per group of paths (node irrep ``l1``) and run of paths with equal output dimension::

    M_k = Y_k · C_g;   o_k = h[src_k]_g · M_k;   o_k *= w_k;   agg_g[dst_k] += o_k

(:meth:`EdgeLayout._chunk`), and the transposed products in the hand-written backward
(:meth:`EdgeLayout._chunk_grads`).
"""

from __future__ import annotations

import warnings

import torch

from atomshard.models.potential.conv._autograd import _Gather, _RowSink
from atomshard.models.potential.conv._base import ConvBase


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(a, b)`` for the per-edge products, with the shapes that batched GEMM
    handles badly on the CPU (MKL's batched GEMM is slower there than streaming the
    operands) done as broadcast products: an inner size of 1 (an outer
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
    this torch build bitwise equal to ``index_add_``), but every thread takes part, where
    ``index_add_`` barely uses more than one. Elsewhere (autograd
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


class EdgeLayout(ConvBase):
    """The edge layout's methods of :class:`FusedUVUConvolution`."""

    def _cg(self, g: int, dtype: torch.dtype) -> torch.Tensor:
        """Class ``g``'s 3j block in ``dtype``: a backward pass can run after
        ``torch.func.functional_call`` has put the float32 buffers back (a bfloat16 body,
        atomshard.train.parallel), with the saved tensors still in bfloat16."""
        buf = getattr(self, f"cg_{g}")
        assert isinstance(buf, torch.Tensor)
        return buf if buf.dtype == dtype else buf.to(dtype)

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
            # operand, faster than copying it contiguous first (and for one-row products
            # too, so plain bmm rather than _bmm's CPU sum of rows)
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
