"""Atom-centred symmetry functions of n2p2 (types 2, 3, 9, 12, 13, 20-25) on edge vectors.

The work is organised as in CabanaMD: recompute instead of store. Atoms are taken in
contiguous blocks whose neighbour-pair count stays under a budget; for one block the
radial terms run over its edges and the angular terms over its neighbour pairs
``(j, k), j < k`` of each centre, which are generated from the edge list, used, and
dropped. Nothing per pair outlives the block.

Symmetry functions of one centre element sharing the same neighbour selection and
functional form are grouped and evaluated together as ``[n_terms, n_functions]``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from atomshard.io.n2p2 import SymmetryFunction
from atomshard.models.bpnn._functions import compact_function, cutoff_function

#: Key of a group: (centre element, neighbour selector, type, subtype). The selector is
#: an element index (radial), a sorted element pair (angular) or -1 (weighted: all).
GroupKey = tuple[int, int | tuple[int, int], int, str]


@dataclass
class SFGroup:
    """Symmetry functions evaluated together; ``params`` are ``[1, n]`` rows."""

    center: int
    select: int | tuple[int, int]
    type: int
    order: int
    asymmetric: bool
    cols: torch.Tensor  # [n] column of each function in the centre element's input vector
    params: dict[str, torch.Tensor]
    #: Angular groups factor each term as radial(a) * angular(b): the distinct radial
    #: parameter sets ``rad`` ([1, n_a] rows), distinct angular sets ``ang`` ([1, n_b]) and
    #: the pair (a_idx[s], b_idx[s]) of each function.
    rad: dict[str, torch.Tensor] | None = None
    ang: dict[str, torch.Tensor] | None = None
    a_idx: torch.Tensor | None = None
    b_idx: torch.Tensor | None = None
    a_sel: torch.Tensor | None = None  # [n_a, n] one-hot, or empty for the identity
    b_sel: torch.Tensor | None = None

    @property
    def angular(self) -> bool:
        return self.type not in (2, 12, 20, 23)


class SymmetryPlan:
    """All symmetry functions of a potential, grouped for evaluation.

    Args:
        functions: per element, its symmetry functions in n2p2 order.
        atomic_numbers: per element index, Z (weights of types 12, 13, 23-25).
        cutoff_type, cutoff_alpha: n2p2 cutoff function for types 2, 3, 9, 12, 13.
        dtype: dtype of the computation.
    """

    def __init__(
        self,
        functions: list[list[SymmetryFunction]],
        atomic_numbers: list[int],
        cutoff_type: int,
        cutoff_alpha: float,
        dtype: torch.dtype,
    ) -> None:
        self.n_elements = len(functions)
        self.n_features = [len(f) for f in functions]
        self.n_features_max = max(self.n_features)
        self.cutoff_type = cutoff_type
        self.cutoff_alpha = cutoff_alpha
        self.dtype = dtype
        self.z = torch.tensor(atomic_numbers, dtype=dtype)
        grouped: dict[GroupKey, list[tuple[int, SymmetryFunction]]] = {}
        for fs in functions:
            for col, sf in enumerate(fs):
                if sf.weighted:
                    sel: int | tuple[int, int] = -1
                elif sf.angular:
                    sel = (sf.e1, sf.e2)
                else:
                    sel = sf.e1
                grouped.setdefault((sf.center, sel, sf.type, sf.subtype), []).append((col, sf))
        self.radial: list[SFGroup] = []
        self.angular: list[SFGroup] = []
        for (c, sel, t, sub), items in grouped.items():
            group = SFGroup(
                center=c,
                select=sel,
                type=t,
                order=int(sub[1]) if sub else 0,
                asymmetric=sub.endswith("a"),
                cols=torch.tensor([col for col, _ in items], dtype=torch.int64),
                params={
                    name: torch.tensor([[_param(sf, name) for _, sf in items]], dtype=dtype)
                    for name in ("eta", "rs", "rc", "lam", "zeta", "rl", "al", "ar")
                },
            )
            if group.angular:
                _factorise(group, [sf for _, sf in items], dtype)
            (self.angular if group.angular else self.radial).append(group)
        # Largest angular cutoff per centre element: only those edges form pairs.
        self.angular_rc = torch.zeros(self.n_elements, dtype=torch.float64)
        for g in self.angular:
            rc = float(g.params["rc"].max())
            self.angular_rc[g.center] = max(float(self.angular_rc[g.center]), rc)
        # pair_used[c, a, b]: does any angular function of centre c use neighbour pair (a, b)?
        e = self.n_elements
        self.pair_used = torch.zeros(e, e, e, dtype=torch.bool)
        for g in self.angular:
            if g.select == -1:
                self.pair_used[g.center] = True
            else:
                a, b = g.select  # type: ignore[misc]
                self.pair_used[g.center, a, b] = self.pair_used[g.center, b, a] = True
        self.max_cutoff = max(float(g.params["rc"].max()) for g in self.radial + self.angular)


def _factorise(group: SFGroup, sfs: list[SymmetryFunction], dtype: torch.dtype) -> None:
    rad_names: tuple[str, ...]
    ang_names: tuple[str, ...]
    if group.type in (3, 9, 13):
        rad_names, ang_names = ("eta", "rs", "rc"), ("lam", "zeta")
    else:
        rad_names, ang_names = ("rl", "rc"), ("al", "ar")
    rad_keys = [tuple(_param(sf, n) for n in rad_names) for sf in sfs]
    ang_keys = [tuple(_param(sf, n) for n in ang_names) for sf in sfs]
    rad_u, ang_u = list(dict.fromkeys(rad_keys)), list(dict.fromkeys(ang_keys))
    group.a_idx = torch.tensor([rad_u.index(k) for k in rad_keys], dtype=torch.int64)
    group.b_idx = torch.tensor([ang_u.index(k) for k in ang_keys], dtype=torch.int64)
    n_a, n_b = len(rad_u), len(ang_u)
    group.a_sel = _one_hot(group.a_idx, n_a, dtype)
    group.b_sel = _one_hot(group.b_idx, n_b, dtype)
    group.rad = {
        n: torch.tensor([[k[i] for k in rad_u]], dtype=dtype) for i, n in enumerate(rad_names)
    }
    group.ang = {
        n: torch.tensor([[k[i] for k in ang_u]], dtype=dtype) for i, n in enumerate(ang_names)
    }


def _one_hot(idx: torch.Tensor, n_rows: int, dtype: torch.dtype) -> torch.Tensor:
    """``[n_rows, n]`` selection matrix of ``idx``; empty when it is the identity."""
    if n_rows == idx.numel() and bool((idx == torch.arange(n_rows)).all()):
        return torch.zeros(0, dtype=dtype)
    sel = torch.zeros(n_rows, idx.numel(), dtype=dtype)
    sel[idx, torch.arange(idx.numel())] = 1.0
    return sel


def _param(sf: SymmetryFunction, name: str) -> float:
    if name == "al":
        return math.radians(sf.angle_left)
    if name == "ar":
        return math.radians(sf.angle_right)
    return float(getattr(sf, name))


def block_features(
    plan: SymmetryPlan,
    vec: torch.Tensor,
    center: torch.Tensor,
    center_elem: torch.Tensor,
    nbr_elem: torch.Tensor,
    n_centers: int,
) -> torch.Tensor:
    """Unscaled symmetry functions of one block of centre atoms.

    Edges must be grouped by centre (``center`` non-decreasing).

    Shapes:
        vec: ``[n_edges, 3]`` centre -> neighbour vectors, potential length unit
        center: ``[n_edges]`` int64, block-local index of the centre atom
        center_elem, nbr_elem: ``[n_edges]`` int64 element indices
        returns: ``[n_centers, n_features_max]``, column ``s`` of a row of element ``e``
        is that element's function ``s`` (columns past ``n_features[e]`` are zero)
    """
    dtype = vec.dtype
    r = torch.linalg.vector_norm(vec, dim=1)
    out = torch.zeros(n_centers, plan.n_features_max, dtype=dtype, device=vec.device)
    z = plan.z.to(dtype)
    for g, idx in radial_edges(plan, center_elem, nbr_elem):
        rr = r.index_select(0, idx).unsqueeze(1)
        p = g.params
        if g.type in (2, 12):
            d = rr - p["rs"]
            val = torch.exp(-p["eta"] * (d * d)) * cutoff_function(
                rr, p["rc"], plan.cutoff_type, plan.cutoff_alpha
            )
        else:
            val = _compact_radial(rr, p["rl"], p["rc"], g)
        if g.select == -1:
            val = val * z[nbr_elem.index_select(0, idx)].unsqueeze(1)
        out = out.index_add(1, g.cols, SegmentSum(center.index_select(0, idx), n_centers)(val))
    if plan.angular:
        ps = pair_sets(plan, vec, r, center, center_elem, nbr_elem, n_centers)
        out = out + _angular(plan, vec, r, ps, n_centers)
    return out


def radial_edges(
    plan: SymmetryPlan, center_elem: torch.Tensor, nbr_elem: torch.Tensor
) -> Iterator[tuple[SFGroup, torch.Tensor]]:
    """Each radial group with the edges it runs over (groups with none are skipped).

    Shapes:
        center_elem, nbr_elem: ``[n_edges]`` int64; yields ``(group, [n_selected] int64)``
    """
    for g in plan.radial:
        sel = center_elem == g.center
        if g.select != -1:
            sel &= nbr_elem == g.select
        idx = torch.nonzero(sel).squeeze(1)
        if idx.numel() > 0:
            yield g, idx


def neighbour_pairs(center: torch.Tensor, n_centers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs ``(j, k), j < k`` of edges with the same centre (edges grouped by centre).

    Shapes:
        center: ``[n_edges]`` int64 non-decreasing; returns two ``[n_pairs]`` int64
    """
    counts = torch.bincount(center, minlength=n_centers)
    start = torch.cumsum(counts, 0) - counts
    edges = torch.arange(center.numel())
    return _pairs_after(edges, counts[center] - (edges - start[center]) - 1)


def _pairs_after(
    first: torch.Tensor, partners: torch.Tensor, start: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``(first[e], base[e] + m)`` for ``m < partners[e]``, with ``base = first + 1``
    (triangle within one run of edges) or ``base = start`` (a second run)."""
    j = torch.repeat_interleave(first, partners)
    offset = torch.arange(j.numel()) - torch.repeat_interleave(
        torch.cumsum(partners, 0) - partners, partners
    )
    base = j + 1 if start is None else torch.repeat_interleave(start, partners)
    return j, base + offset


def _compact_radial(
    r: torch.Tensor, rl: torch.Tensor, rc: torch.Tensor, g: SFGroup
) -> torch.Tensor:
    v = compact_function(r, rl, rc, g.order, g.asymmetric)
    return torch.where(r > rl, v, torch.zeros_like(v))


@dataclass
class PairSets:
    """Edges kept for angular terms, sorted by (centre, neighbour element), and the
    neighbour pairs built from them for each (centre element, neighbour pair) in use.

    Shapes:
        order: ``[n_kept]`` int64 positions of the kept edges in the block's edge list
        sets: ``(groups, j, k, weight)`` with ``j, k: [n_pairs]`` indices into kept edges
        (``j`` non-decreasing) and ``weight = Z_a Z_b`` for weighted functions
    """

    order: torch.Tensor
    center: torch.Tensor
    sets: list[tuple[list[SFGroup], torch.Tensor, torch.Tensor, float]]


def pair_sets(
    plan: SymmetryPlan,
    vec: torch.Tensor,
    r: torch.Tensor,
    center: torch.Tensor,
    center_elem: torch.Tensor,
    nbr_elem: torch.Tensor,
    n_centers: int,
) -> PairSets:
    """Index work of the angular terms (no gradients flow through it).

    When every function of a set needs ``r_jk < rc`` (types 3, 13, 21, 24), pairs beyond
    the largest such ``rc`` are dropped here: about half of all pairs in a liquid.
    """
    n_el = plan.n_elements
    with torch.no_grad():
        keep = r < plan.angular_rc.to(r.dtype)[center_elem]
        key = center * n_el + nbr_elem
        order = torch.argsort(torch.where(keep, key, n_centers * n_el), stable=True)
        order = order[: int(keep.sum())]
        key, center = key[order], center[order]
        cel, nel = center_elem[order], nbr_elem[order]
        counts = torch.bincount(key, minlength=n_centers * n_el)
        starts = torch.cumsum(counts, 0) - counts
        sets = []
        rows = vec.index_select(0, order).t().contiguous()
        for c in range(n_el):
            for a in range(n_el):
                for b in range(a, n_el):
                    if not bool(plan.pair_used[c, a, b]):
                        continue
                    first = torch.nonzero((cel == c) & (nel == a)).squeeze(1)
                    if first.numel() == 0:
                        continue
                    if a == b:
                        rank = first - starts[key[first]]
                        jj, kk = _pairs_after(first, counts[key[first]] - rank - 1)
                    else:
                        other = center[first] * n_el + b
                        jj, kk = _pairs_after(first, counts[other], starts[other])
                    if jj.numel() == 0:
                        continue
                    groups = [g for g in plan.angular if g.center == c and g.select in (-1, (a, b))]
                    if all(g.type in (3, 13, 21, 24) for g in groups):
                        rc = max(float(g.params["rc"].max()) for g in groups)
                        d2 = torch.zeros(jj.shape, dtype=rows.dtype)
                        for comp in rows:  # x, y, z rows: 1-D gathers, no dim-1 reduction
                            d = comp.index_select(0, kk) - comp.index_select(0, jj)
                            d2 += d * d
                        near = torch.nonzero(d2 < rc * rc).squeeze(1)
                        jj, kk = jj.index_select(0, near), kk.index_select(0, near)
                    sets.append((groups, jj, kk, float(plan.z[a] * plan.z[b])))
    return PairSets(order, center, sets)


def _angular(
    plan: SymmetryPlan, vec: torch.Tensor, r: torch.Tensor, ps: PairSets, n_centers: int
) -> torch.Tensor:
    """Angular functions over the pairs of ``ps``: they are made per (centre element,
    neighbour elements) from the edges sorted by (centre, neighbour element), so only pairs
    some function uses exist."""
    out = torch.zeros(n_centers, plan.n_features_max, dtype=vec.dtype)
    vec_rows = vec.index_select(0, ps.order).t().contiguous()
    r = r.index_select(0, ps.order)
    edge_tables: dict[int, torch.Tensor] = {}
    for groups, jj, kk, weight in ps.sets:
        _pair_terms(
            plan, groups, vec_rows, r, jj, kk, ps.center[jj], n_centers, weight, edge_tables, out
        )
    return out


def _pair_terms(
    plan: SymmetryPlan,
    groups: list[SFGroup],
    vec: torch.Tensor,
    r: torch.Tensor,
    jj: torch.Tensor,
    kk: torch.Tensor,
    pair_center: torch.Tensor,
    n_centers: int,
    weight: float,
    edge_tables: dict[int, torch.Tensor],
    out: torch.Tensor,
) -> None:
    """Add the terms of ``groups`` over the pairs ``(jj, kk)`` into ``out`` (in place)."""
    # Structure of arrays (x, y, z rows): 1-D gathers and dot products vectorise well.
    xj, yj, zj = (c.index_select(0, jj) for c in vec)
    xk, yk, zk = (c.index_select(0, kk) for c in vec)
    rij, rik = r.index_select(0, jj), r.index_select(0, kk)
    cos = ((xj * xk + yj * yk + zj * zk) / (rij * rik)).unsqueeze(1)
    summer = SegmentSum(pair_center, n_centers)
    shared: dict[Any, torch.Tensor] = {}
    for g in groups:
        assert g.rad is not None and g.ang is not None
        assert g.a_sel is not None and g.b_sel is not None
        if id(g) not in edge_tables:
            edge_tables[id(g)] = _edge_factor(plan, g, r.unsqueeze(1), {})
        table = edge_tables[id(g)]
        rad = table.index_select(0, jj) * table.index_select(0, kk)
        if g.type in (3, 13, 21, 24):
            if "rjk" not in shared:
                dx, dy, dz = xk - xj, yk - yj, zk - zj
                shared["rjk"] = torch.sqrt(dx * dx + dy * dy + dz * dz).unsqueeze(1)
            rad = rad * _edge_factor(plan, g, shared["rjk"], shared)
        if g.type in (3, 9, 13):
            lams, zetas = g.ang["lam"][0].tolist(), g.ang["zeta"][0].tolist()
            cols = [
                _cos_power(cos, lam, zeta, shared) for lam, zeta in zip(lams, zetas, strict=True)
            ]
            ang = cols[0] if len(cols) == 1 else torch.cat(cols, 1)
        else:
            if "theta" not in shared:
                valid = (cos > -1.0) & (cos < 1.0)
                shared["valid"] = valid
                shared["theta"] = torch.acos(torch.where(valid, cos, torch.zeros_like(cos)))
            ang = compact_function(shared["theta"], g.ang["al"], g.ang["ar"], g.order, False)
            ang = torch.where(shared["valid"], ang, torch.zeros_like(ang))
        # column selection by one-hot products: contiguous, exact (x * 1 + 0 + ...)
        term = (rad if g.a_sel.numel() == 0 else rad @ g.a_sel) * (
            ang if g.b_sel.numel() == 0 else ang @ g.b_sel
        )
        if g.select == -1:
            term = term * weight
        out.index_add_(1, g.cols, summer(term))


def _cos_power(cos: torch.Tensor, lam: float, zeta: float, shared: dict) -> torch.Tensor:
    """``2^(1-zeta) (1 + lam cos)^zeta``, zero where ``1 + lam cos <= 0`` (n2p2)."""
    key = ("ang", lam, zeta)
    if key not in shared:
        base = (1.0 + lam * cos).clamp(min=0.0)
        if zeta == 1.0:
            value = base
        elif zeta == round(zeta) and zeta <= 64:
            value = _int_power(base, int(zeta)) * 2.0 ** (1.0 - zeta)
        else:
            value = base**zeta * 2.0 ** (1.0 - zeta)
        shared[key] = value
    return shared[key]


def _int_power(x: torch.Tensor, n: int) -> torch.Tensor:
    result: torch.Tensor | None = None
    power = x
    while n:
        if n & 1:
            result = power if result is None else result * power
        n >>= 1
        if n:
            power = power * power
    assert result is not None
    return result


class SegmentSum:
    """Sums rows of ``[n_terms, k]`` into ``[n_segments, k]`` by a sorted segment index.

    A CSR matrix product: much faster than ``index_add_`` on CPU (which barely uses a
    second thread) and differentiable (its transpose is used in backward).
    """

    def __init__(self, segment: torch.Tensor, n_segments: int) -> None:
        counts = torch.bincount(segment, minlength=n_segments)
        crow = torch.zeros(n_segments + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=crow[1:])
        self.crow, self.n_segments, self.n_terms = crow, n_segments, int(segment.numel())

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse", UserWarning)
            matrix = torch.sparse_csr_tensor(
                self.crow,
                torch.arange(self.n_terms),
                torch.ones(self.n_terms, dtype=values.dtype),
                (self.n_segments, self.n_terms),
                check_invariants=False,
            )
            return matrix @ values


def _edge_factor(plan: SymmetryPlan, g: SFGroup, r: torch.Tensor, shared: dict) -> torch.Tensor:
    """Per-distance radial factor of an angular group: ``[n, n_a]`` (``shared`` caches the
    cutoff function per radius for distances shared by several groups)."""
    assert g.rad is not None
    if g.type in (3, 9, 13):
        p = g.rad
        rcs = p["rc"][0].unique()
        if rcs.numel() == 1:
            key = ("fc", float(rcs[0]))
            if key not in shared:
                shared[key] = cutoff_function(r, float(rcs[0]), plan.cutoff_type, plan.cutoff_alpha)
            fc = shared[key]
        else:
            fc = cutoff_function(r, p["rc"], plan.cutoff_type, plan.cutoff_alpha)
        if bool((p["rs"] == 0).all()):
            d2 = shared.get(("r2", id(r)))
            if d2 is None:
                d2 = shared[("r2", id(r))] = r * r
        else:
            d = r - p["rs"]
            d2 = d * d
        return torch.exp(-p["eta"] * d2) * fc
    return _compact_radial(r, g.rad["rl"], g.rad["rc"], g)
