"""The paths of a ``uvu`` tensor product grouped for the fused convolution, and their 3j blocks.

Everything here is static (Python ints and index tensors built once per layer): which
paths read which node irrep (a *group*), runs of paths with the same output dimension in
a group (a *class*), the paths of a group that read the same Y irrep (a *Y set*, node
layout), and the column permutations between e3nn's layouts and the fused ones.
"""

from __future__ import annotations

import torch
from e3nn import o3


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


class PathTable:
    """The fused layout of a ``TensorProduct``'s paths (see :class:`FusedUVUConvolution`).

    Within a group the paths are ordered by output dimension ``d3`` (stable), and per edge
    the group's output is ``[K, u]`` (``K`` = the group's output components), so a run of
    paths with equal ``d3`` is a ``[n, d3, u]`` view that the radial weights ``[n, 1, u]``
    multiply by broadcasting, never expanded to ``K``.

    Attributes:
        groups, paths, ysets: the static layout.
        class_shapes: ``(d1, n d3)`` of every class.
        perm: ``[dim_out]`` e3nn output element -> column of the group-layout node sums.
        wperm: the radial MLP's output columns in group order (each group's weights a
            contiguous ``[P, u]`` slice); wperm_nodes: the same, each group's paths by Y
            set (node layout).
        au_perm: ``[dim_x]`` each node irrep's block of ``h`` as ``[component a, channel
            u]`` instead of e3nn's ``[u, a]`` (node layout: the per-slot products then run
            along the channels).
        group_dim: columns of the group-layout node sums.
    """

    def __init__(self, tp: o3.TensorProduct) -> None:
        irreps_x, irreps_y, irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        if any(mul != 1 for mul, _ in irreps_y):
            raise ValueError(f"second input must have multiplicity 1, got {irreps_y}")
        if tp.shared_weights:
            raise ValueError("the fused convolution needs per-edge (unshared) weights")
        covered = sorted(ins.i_out for ins in tp.instructions)
        if covered != list(range(len(irreps_out))):
            raise ValueError("every output block needs exactly one instruction")
        self.dim_x = irreps_x.dim
        self.dim_y = irreps_y.dim
        self.dim_out = irreps_out.dim
        y_slices = irreps_y.slices()
        out_slices = irreps_out.slices()

        # weight offsets of each instruction in e3nn's flat weight layout
        offsets, off = [], 0
        for ins in tp.instructions:
            if ins.connection_mode != "uvu" or not ins.has_weight:
                raise ValueError(f"only weighted 'uvu' instructions are supported, got {ins}")
            offsets.append(off)
            off += irreps_x[ins.i_in1].mul

        self.groups: list[_Group] = []
        self.paths: list[_Path] = []
        self.ysets: list[_YSet] = []
        self.class_shapes: list[tuple[int, int]] = []
        perm = torch.empty(self.dim_out, dtype=torch.int64)
        wperm: list[int] = []
        wperm_nodes: list[int] = []
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
                self.paths.append(
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
                self.class_shapes.append((d1, cls.n_paths * cls.d3))
            n_classes += len(grp.classes)
            grp.index = len(self.groups)
            self.groups.append(grp)
            first = len(self.paths) - len(members)
            mine = self.paths[first:]
            w_off = 0
            for y_start in sorted({path.y_slice.start for path in mine}):
                ps = [p for p, path in enumerate(mine) if path.y_slice.start == y_start]
                y_set = _YSet(grp.index, mine[ps[0]].y_slice, [first + p for p in ps], w_off)
                self.ysets.append(y_set)
                wperm_nodes.extend(offsets[members[p]] + u_ for p in ps for u_ in range(mul))
                w_off += len(ps)
            col += mul * k_total
        self.perm = perm
        self.wperm = torch.tensor(wperm, dtype=torch.int64)
        self.wperm_nodes = torch.tensor(wperm_nodes, dtype=torch.int64)
        au_perm = torch.arange(self.dim_x)
        for x_slice, mul_ir in zip(irreps_x.slices(), irreps_x):
            mul, d, first = mul_ir.mul, mul_ir.ir.dim, x_slice.start
            a, u_ = torch.arange(d).unsqueeze(1), torch.arange(mul).unsqueeze(0)
            au_perm[first + (a * mul + u_).reshape(-1)] = (first + u_ * d + a).reshape(-1)
        self.au_perm = au_perm
        self.group_dim = col
        self.x_sizes = [mul_ir.dim for mul_ir in irreps_x]
        self.w_sizes = [grp.n_paths * grp.mul for grp in self.groups]
        # columns of each class's node sums, in the order the edge layout concatenates them
        self.part_sizes = [
            cls.n_paths * cls.d3 * grp.mul for grp in self.groups for cls in grp.classes
        ]


def three_j_blocks(
    paths: list[_Path],
    class_shapes: list[tuple[int, int]],
    dim_y: int,
    stored: dict[str, torch.Tensor],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The dense 3j blocks (path weights folded in), float64 on the CPU.

    Returns:
        per path, its node-layout block ``C_p[c, b, a]`` (``[d3, d2, d1]``); per class,
        its edge-layout block ``[dim_y, n d3 d1]`` (``M = Y @ block`` per edge).

    ``stored`` maps ``"_w3j_{l1}_{l2}_{l3}"`` to 3j symbols to use instead of
    ``o3.wigner_3j``'s (a loaded checkpoint's own copies).
    """
    blocks = [torch.zeros(dim_y, d1, k, dtype=torch.float64) for d1, k in class_shapes]
    node_blocks = []
    for path in paths:
        l1, l2, l3 = path.ls
        buf = stored.get(f"_w3j_{l1}_{l2}_{l3}")
        w3j = (
            buf.detach().to("cpu", torch.float64)
            if buf is not None
            else o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        )  # [d1, d2, d3]
        d3 = 2 * l3 + 1
        blocks[path.cls][path.y_slice, :, path.k : path.k + d3] = path.weight * w3j.permute(1, 0, 2)
        # node layout: C_p[c, b, a], [d3, d2, d1]
        node_blocks.append((path.weight * w3j.permute(2, 1, 0)).contiguous())
    # per class: M = Y @ block -> [n, d3, d1] per edge
    flats = [block.permute(0, 2, 1).reshape(dim_y, -1).contiguous() for block in blocks]
    return node_blocks, flats
