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
from dataclasses import dataclass

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
    for g in plan.radial:
        sel = center_elem == g.center
        if g.select != -1:
            sel &= nbr_elem == g.select
        idx = torch.nonzero(sel).squeeze(1)
        if idx.numel() == 0:
            continue
        rr = r.index_select(0, idx).unsqueeze(1)
        p = g.params
        if g.type in (2, 12):
            val = torch.exp(-p["eta"] * (rr - p["rs"]) ** 2) * cutoff_function(
                rr, p["rc"], plan.cutoff_type, plan.cutoff_alpha
            )
        else:
            val = compact_function(rr, p["rl"], p["rc"], g.order, g.asymmetric)
            val = torch.where(rr > p["rl"], val, torch.zeros_like(val))
        if g.select == -1:
            val = val * z[nbr_elem.index_select(0, idx)].unsqueeze(1)
        acc = torch.zeros(n_centers, val.shape[1], dtype=dtype).index_add_(
            0, center.index_select(0, idx), val
        )
        out = out.index_add(1, g.cols, acc)
    if plan.angular:
        out = out + _angular(plan, vec, r, center, center_elem, nbr_elem, n_centers)
    return out


def neighbour_pairs(center: torch.Tensor, n_centers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs ``(j, k), j < k`` of edges with the same centre (edges grouped by centre).

    Shapes:
        center: ``[n_edges]`` int64 non-decreasing; returns two ``[n_pairs]`` int64
    """
    n_edges = center.numel()
    counts = torch.bincount(center, minlength=n_centers)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n_edges) - start[center]
    partners = counts[center] - rank - 1
    j = torch.repeat_interleave(torch.arange(n_edges), partners)
    first = torch.cumsum(partners, 0) - partners
    k = torch.arange(j.numel()) - first[j] + j + 1
    return j, k


def _angular(
    plan: SymmetryPlan,
    vec: torch.Tensor,
    r: torch.Tensor,
    center: torch.Tensor,
    center_elem: torch.Tensor,
    nbr_elem: torch.Tensor,
    n_centers: int,
) -> torch.Tensor:
    dtype = vec.dtype
    out = torch.zeros(n_centers, plan.n_features_max, dtype=dtype)
    with torch.no_grad():
        keep = torch.nonzero(r < plan.angular_rc.to(dtype)[center_elem]).squeeze(1)
    vec, r = vec.index_select(0, keep), r.index_select(0, keep)
    center, center_elem = center.index_select(0, keep), center_elem.index_select(0, keep)
    nbr_elem = nbr_elem.index_select(0, keep)
    j, k = neighbour_pairs(center, n_centers)
    c, ej, ek = center_elem[j], nbr_elem[j], nbr_elem[k]
    used = plan.pair_used[c, ej, ek]
    j, k, c, ej, ek = j[used], k[used], c[used], ej[used], ek[used]
    lo, hi = torch.minimum(ej, ek), torch.maximum(ej, ek)
    z = plan.z.to(dtype)
    for g in plan.angular:
        sel = c == g.center
        if g.select != -1:
            a, b = g.select  # type: ignore[misc]
            sel &= (lo == a) & (hi == b)
        idx = torch.nonzero(sel).squeeze(1)
        if idx.numel() == 0:
            continue
        jj, kk = j.index_select(0, idx), k.index_select(0, idx)
        vj, vk = vec.index_select(0, jj), vec.index_select(0, kk)
        rij, rik = r.index_select(0, jj).unsqueeze(1), r.index_select(0, kk).unsqueeze(1)
        cos = ((vj * vk).sum(1) / (rij.squeeze(1) * rik.squeeze(1))).unsqueeze(1)
        val = _angular_terms(plan, g, vj, vk, rij, rik, cos)
        if g.select == -1:
            val = val * (z[ej.index_select(0, idx)] * z[ek.index_select(0, idx)]).unsqueeze(1)
        acc = torch.zeros(n_centers, val.shape[1], dtype=dtype).index_add_(
            0, center.index_select(0, jj), val
        )
        out = out.index_add(1, g.cols, acc)
    return out


def _angular_terms(
    plan: SymmetryPlan,
    g: SFGroup,
    vj: torch.Tensor,
    vk: torch.Tensor,
    rij: torch.Tensor,
    rik: torch.Tensor,
    cos: torch.Tensor,
) -> torch.Tensor:
    """``[n_pairs, n_functions]`` terms of one angular group (before the sum over pairs)."""
    p = g.params
    with_jk = g.type in (3, 13, 21, 24)
    rjk = torch.linalg.vector_norm(vk - vj, dim=1).unsqueeze(1) if with_jk else None
    if g.type in (3, 9, 13):
        ct, alpha = plan.cutoff_type, plan.cutoff_alpha
        rs = p["rs"]
        expo = (rij - rs) ** 2 + (rik - rs) ** 2
        rad = cutoff_function(rij, p["rc"], ct, alpha) * cutoff_function(rik, p["rc"], ct, alpha)
        if rjk is not None:
            expo = expo + (rjk - rs) ** 2
            rad = rad * cutoff_function(rjk, p["rc"], ct, alpha)
        base = (1.0 + p["lam"] * cos).clamp(min=0.0)
        zeta = p["zeta"]
        if bool((zeta == 1.0).all()):
            ang = base
        else:
            ang = base**zeta * 2.0 ** (1.0 - zeta)
        return ang * rad * torch.exp(-p["eta"] * expo)
    rl, rc = p["rl"], p["rc"]

    def radial(x: torch.Tensor) -> torch.Tensor:
        v = compact_function(x, rl, rc, g.order, g.asymmetric)
        return torch.where(x > rl, v, torch.zeros_like(v))

    rad = radial(rij) * radial(rik)
    if rjk is not None:
        rad = rad * radial(rjk)
    valid = (cos > -1.0) & (cos < 1.0)
    theta = torch.acos(torch.where(valid, cos, torch.zeros_like(cos)))
    ang = compact_function(theta, p["al"], p["ar"], g.order, False)
    return torch.where(valid, rad * ang, torch.zeros_like(rad))
