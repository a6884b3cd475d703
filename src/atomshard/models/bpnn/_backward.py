"""Explicit backward of the symmetry functions: ``dE/dG -> dE/d(edge vectors)``.

Recompute instead of store: the block's geometry and pairs are rebuilt and, for every
term, the derivative is contracted with ``dE/dG`` on the spot. The one-variable
functions (cutoffs, radial Gaussians, compact functions, angular powers) give value and
derivative together by forward-mode AD (``torch.func.jvp``); the chain rule through
distances, cosines and ``r_jk`` is written out:

    dr_ij/dv_j = v_j / r_ij
    dcos/dv_j = v_k / (r_ij r_ik) - cos v_j / r_ij^2
    dr_jk/dv_j = (v_j - v_k) / r_jk

so each pair adds a radial coefficient to its two edges and a cross term ``beta v_k``
(to ``j``) and ``beta v_j`` (to ``k``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from atomshard.models.bpnn._functions import compact_function, cutoff_function
from atomshard.models.bpnn._symmetry import (
    PairSets,
    SFGroup,
    SymmetryPlan,
    _compact_radial,
    _cos_power,
    _edge_factor,
    pair_sets,
    radial_edges,
)


def _value_and_slope(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(x)`` and ``d fn / dx`` for an elementwise ``fn`` (one forward-mode pass)."""
    out = torch.func.jvp(fn, (x,), (torch.ones_like(x),))
    return out[0], out[1]


def _edge_factor_fresh(plan: SymmetryPlan, g: SFGroup, r: torch.Tensor) -> torch.Tensor:
    return _edge_factor(plan, g, r, {})


def _radial_value(plan: SymmetryPlan, g: SFGroup, r: torch.Tensor) -> torch.Tensor:
    p = g.params
    if g.type in (2, 12):
        d = r - p["rs"]
        return torch.exp(-p["eta"] * (d * d)) * cutoff_function(
            r, p["rc"], plan.cutoff_type, plan.cutoff_alpha
        )
    return _compact_radial(r, p["rl"], p["rc"], g)


def _angular_value(g: SFGroup, cos: torch.Tensor) -> torch.Tensor:
    assert g.ang is not None
    if g.type in (3, 9, 13):
        lams, zetas = g.ang["lam"][0].tolist(), g.ang["zeta"][0].tolist()
        cols = [_cos_power(cos, lam, zeta, {}) for lam, zeta in zip(lams, zetas, strict=True)]
        return cols[0] if len(cols) == 1 else torch.cat(cols, 1)
    valid = (cos.detach() > -1.0) & (cos.detach() < 1.0)
    theta = torch.acos(torch.where(valid, cos, torch.zeros_like(cos)))
    ang = compact_function(theta, g.ang["al"], g.ang["ar"], g.order, False)
    return torch.where(valid, ang, torch.zeros_like(ang))


def block_features_backward(
    plan: SymmetryPlan,
    vec: torch.Tensor,
    center: torch.Tensor,
    center_elem: torch.Tensor,
    nbr_elem: torch.Tensor,
    n_centers: int,
    grad: torch.Tensor,
) -> torch.Tensor:
    """Gradient of ``sum(grad * block_features(...))`` with respect to ``vec``.

    Shapes:
        vec: ``[n_edges, 3]``; grad: ``[n_centers, n_features_max]``
        returns: ``[n_edges, 3]``
    """
    r = torch.linalg.vector_norm(vec, dim=1)
    z = plan.z.to(vec.dtype)
    g_r = torch.zeros_like(r)
    for g, idx in radial_edges(plan, center_elem, nbr_elem):
        _, slope = _value_and_slope(
            partial(_radial_value, plan, g), r.index_select(0, idx).unsqueeze(1)
        )
        w = grad.index_select(1, g.cols).index_select(0, center.index_select(0, idx))
        coef = (w * slope).sum(1)
        if g.select == -1:
            coef = coef * z[nbr_elem.index_select(0, idx)]
        g_r.index_add_(0, idx, coef)
    g_vec = (g_r / r).unsqueeze(1) * vec
    if plan.angular:
        ps = pair_sets(plan, vec, r, center, center_elem, nbr_elem, n_centers)
        g_vec.index_add_(0, *_angular_backward(plan, vec, r, ps, grad))
    return g_vec


def _angular_backward(
    plan: SymmetryPlan, vec: torch.Tensor, r: torch.Tensor, ps: PairSets, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edge index, gradient rows)`` of the angular terms over the pairs of ``ps``."""
    rows = vec.index_select(0, ps.order).t().contiguous()
    rk = r.index_select(0, ps.order)
    g_r = torch.zeros_like(rk)
    g_rows = torch.zeros_like(rows)
    tables: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for groups, jj, kk, weight in ps.sets:
        vj = [c.index_select(0, jj) for c in rows]
        vk = [c.index_select(0, kk) for c in rows]
        rij, rik = rk.index_select(0, jj), rk.index_select(0, kk)
        cos = ((vj[0] * vk[0] + vj[1] * vk[1] + vj[2] * vk[2]) / (rij * rik)).unsqueeze(1)
        pc = ps.center.index_select(0, jj)
        d_rij = torch.zeros_like(rij)
        d_rik = torch.zeros_like(rij)
        d_cos = torch.zeros_like(rij)
        d_rjk: torch.Tensor | None = None
        rjk: torch.Tensor | None = None
        for g in groups:
            assert g.a_sel is not None and g.b_sel is not None
            if id(g) not in tables:
                tables[id(g)] = _value_and_slope(
                    partial(_edge_factor_fresh, plan, g), rk.unsqueeze(1)
                )
            tab, dtab = tables[id(g)]
            tj, tk = tab.index_select(0, jj), tab.index_select(0, kk)
            dtj, dtk = dtab.index_select(0, jj), dtab.index_select(0, kk)
            w = grad.index_select(1, g.cols).index_select(0, pc)
            if g.select == -1:
                w = w * weight
            rad = tj * tk
            with_jk = g.type in (3, 13, 21, 24)
            if with_jk:
                if rjk is None:
                    dx, dy, dz = vk[0] - vj[0], vk[1] - vj[1], vk[2] - vj[2]
                    rjk = torch.sqrt(dx * dx + dy * dy + dz * dz).unsqueeze(1)
                u, du = _value_and_slope(partial(_edge_factor_fresh, plan, g), rjk)
                rad_u = rad * u
            else:
                rad_u = rad
            ang, dang = _value_and_slope(partial(_angular_value, g), cos)
            a_sel, b_sel = g.a_sel, g.b_sel
            ang_s = ang @ b_sel if b_sel.numel() else ang
            rad_s = rad_u @ a_sel if a_sel.numel() else rad_u
            g_rad = w * ang_s
            g_rad = g_rad @ a_sel.t() if a_sel.numel() else g_rad
            g_ang = w * rad_s
            g_ang = g_ang @ b_sel.t() if b_sel.numel() else g_ang
            if with_jk:
                term = (g_rad * rad * du).sum(1)
                d_rjk = term if d_rjk is None else d_rjk + term
                g_rad = g_rad * u
            d_rij += (g_rad * dtj * tk).sum(1)
            d_rik += (g_rad * tj * dtk).sum(1)
            d_cos += (g_ang * dang).sum(1)
        c = cos.squeeze(1)
        beta = d_cos / (rij * rik)
        a_j = d_rij - d_cos * c / rij
        a_k = d_rik - d_cos * c / rik
        if d_rjk is not None and rjk is not None:
            q = d_rjk / rjk.squeeze(1)
            beta = beta - q
            a_j = a_j + q * rij
            a_k = a_k + q * rik
        g_r.index_add_(0, jj, a_j)
        g_r.index_add_(0, kk, a_k)
        for axis in range(3):
            g_rows[axis].index_add_(0, jj, beta * vk[axis])
            g_rows[axis].index_add_(0, kk, beta * vj[axis])
    g_sorted = (g_r / rk) * rows + g_rows
    return ps.order, g_sorted.t()
