"""Low-NN partitioner: recursive bisection of the cell that keeps neighbour parts few.

After the appendix of the Hamiltonian seed, extended:

* **Any number of parts.** A domain that must hold ``k`` parts is cut so that its left
  side holds ``k_left`` parts and ``k_left / k`` of the weight (proportional splits, not
  only powers of two).
* **Axis choice by look-ahead.** The seed cuts the axis that adds the fewest neighbour
  parts now (1 for an uncut periodic axis, ``ceil(2 r_cut / L)`` for a cut one). Cutting
  greedily always prefers thin slabs, whose halos are large. Here the cell scores every
  grid ``n_a x n_b x n_c = k`` it could still become, with the same neighbour count per
  axis (0 uncut and wrapping, else ``min(N - 1, 2 ceil(r_cut / t))`` for pieces of
  thickness ``t``, ``N`` pieces along the whole axis; corners multiply:
  ``prod(1 + m) - 1``) plus the halo volume of such a piece (the piece grown by a ball
  of radius ``r_cut``, times its atom density), weighted by a
  :class:`~atomshard.partition.metrics.CommCostModel`; it then cuts the axis with the
  most pieces of the best grid. Few parts give slabs (1-D), more give columns and bricks,
  as in the seed's Fig. 6. The whole cell picks the grid once and every sub-domain keeps
  its share of it: re-choosing per sub-domain makes neighbouring domains cut different
  axes, and the misaligned cuts cost extra neighbours (docs/performance.md).
* **Cut placement** by summed weight (degree + 1, i.e. owned edges, with isolated atoms
  counted): the split is exact to one atom, so edge imbalance is tiny.
* **Free origin.** The first cut of a periodic axis needs two planes, and their origin is
  free: it is placed (on a 512-bin histogram, vectorised over all origins) where the weight
  within ``r_cut`` of both planes is smallest, e.g. in a low-density layer. It is chosen
  once per axis on all atoms and shared by every domain, so sibling cuts stay aligned.
  A periodic axis with a gap wider than ``r_cut`` is treated as non-periodic from the
  start (slabs).
* **Triclinic cells** are cut along lattice planes (fractional coordinates); non-periodic
  axes use atom extents; more parts than atoms leave parts empty (with a warning).

Every part is an intersection of slabs of its (periodically unwrapped) lattice
coordinates, so it is a connected box. The work is a Python loop over domains
(``2 n_parts - 1``), each with numpy sorts of its atoms: no loop over atoms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from atomshard.partition._input import PartitionInput, check_n_parts, lattice_frame
from atomshard.partition.metrics import CommCostModel

_BINS = 512  # histogram resolution of the free-origin search
_MIN_THICKNESS = 0.5  # Å; floor of piece thickness in the estimates (flat domains)
_BALL = (1.0, 2.0, math.pi, 4.0 * math.pi / 3.0)  # volume of the unit ball in 0-3 dims


@dataclass
class _Domain:
    atoms: np.ndarray  # [n] int64 global atom ids
    lo: np.ndarray  # [3] unwrapped lattice coordinate bounds
    hi: np.ndarray
    wraps: np.ndarray  # [3] bool: periodic and not cut yet (domain spans the period)
    k: int
    first_part: int
    grid: tuple[int, int, int] | None = None  # pieces per axis, fixed by the root
    box_lo: np.ndarray | None = None  # [3] region bounds (open outer sides are -inf/inf)
    box_hi: np.ndarray | None = None
    node: int = 0  # index of this domain in the cut tree


def _with(grid: tuple[int, int, int], axis: int, pieces: int) -> tuple[int, int, int]:
    out = list(grid)
    out[axis] = int(pieces)
    return (out[0], out[1], out[2])


@lru_cache(maxsize=256)
def _grids(k: int) -> tuple[tuple[int, int, int], ...]:
    """All ``(a, b, c)`` with ``a * b * c == k``."""
    divisors = [d for d in range(1, k + 1) if k % d == 0]
    return tuple((a, b, k // (a * b)) for a in divisors for b in divisors if (k // a) % b == 0)


def _estimate(
    k: int,
    thickness: np.ndarray,
    wraps: np.ndarray,
    period: np.ndarray,
    n_domain: int,
    cutoff: float,
    cost: CommCostModel,
) -> tuple[int, int, int]:
    """The grid of ``k`` pieces with the lowest estimated exchange cost for this domain."""
    grids = np.array(_grids(k), dtype=np.float64)  # [g, 3]
    piece = np.maximum(thickness[None, :] / grids, _MIN_THICKNESS)
    bounded = ~wraps[None, :] | (grids > 1)
    across = np.maximum(np.rint(period[None, :] / piece), 1.0)
    reach = np.minimum(across - 1, 2 * np.ceil(cutoff / piece))
    reach = np.where(bounded, reach, 0.0)
    neighbours = np.prod(1 + reach, axis=1) - 1
    # Halo volume: the piece grown by a ball of radius r_cut in its bounded directions
    # (Steiner formula over subsets of axes), r_cut capped where the growth would wrap.
    radius = np.where(bounded, np.minimum(cutoff, np.maximum(period - piece, 0.0) / 2), 0.0)
    volume = np.zeros(len(grids))
    for subset in range(8):
        axes = np.array([(subset >> a) & 1 for a in range(3)], dtype=bool)
        term = np.prod(np.where(axes, radius, piece), axis=1)
        volume += _BALL[int(axes.sum())] * term
    halo = n_domain / k * (volume / np.prod(piece, axis=1) - 1)
    score = cost.latency_s * neighbours + cost.row_time_s * halo
    # Ties (e.g. symmetric cubes) go to the first grid: deterministic.
    best = grids[int(np.argmin(score))]
    return int(best[0]), int(best[1]), int(best[2])


def _free_origin(coord: np.ndarray, weight: np.ndarray, fraction: float, window: int) -> float:
    """Origin in ``[0, 1)`` for the first cut of a periodic axis (see module docstring)."""
    hist = np.bincount(
        np.minimum((coord * _BINS).astype(np.int64), _BINS - 1), weights=weight, minlength=_BINS
    )
    total = hist.sum()
    if total <= 0:
        return 0.0
    cum = np.concatenate([[0.0], np.cumsum(np.concatenate([hist, hist]))])
    origins = np.arange(_BINS)
    target = cum[origins] + fraction * total
    cut = np.searchsorted(cum, target) % _BINS
    near = np.concatenate([hist[-window:], hist, hist[:window]]) if window else hist
    near_cum = np.concatenate([[0.0], np.cumsum(near)])
    density = near_cum[origins + 2 * window + 1] - near_cum[origins]  # bins i-w .. i+w
    score = density + density[cut]
    return float(np.argmin(score)) / _BINS


def lownn_partition(
    graph: PartitionInput,
    n_parts: int,
    *,
    cost_model: CommCostModel | None = None,
) -> np.ndarray:
    """Low-NN partition of ``graph`` into ``n_parts`` parts.

    Args:
        graph: positions, cell, pbc, edges and cutoff (see :func:`as_partition_input`).
        n_parts: number of parts (``>= 1``; more than atoms leaves parts empty).
        cost_model: weighs neighbour count against halo rows in the axis choice.

    Returns:
        ``[n_atoms]`` int64 part of each atom.
    """
    return lownn_layout(graph, n_parts, cost_model=cost_model)[0]


def lownn_layout(
    graph: PartitionInput,
    n_parts: int,
    *,
    cost_model: CommCostModel | None = None,
) -> tuple[np.ndarray, dict[str, object]]:
    """:func:`lownn_partition` and the cut tree that reproduces it as a function of position.

    Returns:
        ``part`` and ``layout``: ``{"modes": [3] int, "origins": [3] float, "nodes":
        [(axis, plane, left, right)], "boxes": [n_parts, 3, 2]}``. Axis ``a`` of a
        wrapped fractional point ``f`` becomes ``t = f`` (mode 0, non-periodic),
        ``t = o + mod(f - o, 1)`` (mode 1, periodic, ``o`` the shared free origin) or
        ``t = mod(f - o, 1)`` (mode 2, periodic axis unwrapped at a vacuum gap). Node 0
        is the root; a child ``c < 0`` is the leaf of part ``-c - 1``; a point goes left
        when ``t[axis] < plane``. ``boxes`` bound each part's region in ``t`` (infinite
        on open sides, NaN for parts left empty). A domain with no more atoms than parts
        gives them one part each here, while its region (the tree) gives them all to its
        first part and leaves the others empty.
    """
    n = graph.n_atoms
    n_parts = check_n_parts(n_parts, n)
    cost = cost_model or CommCostModel()
    part = np.zeros(n, np.int64)
    modes = np.where(np.asarray(graph.pbc, dtype=bool), 1, 0).astype(np.int64)
    origins_arr = np.zeros(3)
    nodes: list[tuple[int, float, int, int]] = []
    boxes = np.full((n_parts, 3, 2), np.nan)
    boxes[0, :, 0], boxes[0, :, 1] = -np.inf, np.inf
    layout: dict[str, object] = {
        "modes": modes,
        "origins": origins_arr,
        "nodes": nodes,
        "boxes": boxes,
    }
    if n_parts == 1 or n == 0:
        return part, layout
    weight = graph.degree().astype(np.float64) + 1.0
    frac, spacing = lattice_frame(graph.positions, graph.cell, graph.pbc)
    periodic = np.asarray(graph.pbc, dtype=bool).copy()
    coord = frac.copy()  # unwrapped lattice coordinates, updated as axes get cut
    # A periodic axis with a gap wider than the cutoff has no edges across the gap: treat
    # it as non-periodic, unwrapped at the gap.
    for a in np.flatnonzero(periodic).tolist():
        values = np.sort(frac[:, a])
        gaps = np.diff(np.concatenate([values, [values[0] + 1.0]]))
        widest = int(np.argmax(gaps))
        if gaps[widest] * spacing[a] > graph.cutoff:
            origin = values[(widest + 1) % n]
            coord[:, a] = np.mod(frac[:, a] - origin, 1.0)
            periodic[a] = False
            modes[a], origins_arr[a] = 2, origin
    lo = np.where(periodic, 0.0, coord.min(axis=0))
    hi = np.where(periodic, 1.0, coord.max(axis=0))
    period = np.where(periodic, spacing, (hi - lo) * spacing)

    origins: dict[int, float] = {}  # one origin per periodic axis, shared by all domains
    unbounded = np.array([-np.inf, np.inf])
    root = _Domain(np.arange(n), lo, hi, periodic.copy(), n_parts, 0)
    root.box_lo, root.box_hi = np.full(3, unbounded[0]), np.full(3, unbounded[1])
    nodes.append((0, 0.0, -1, -1))  # the root; replaced when it is cut
    stack = [root]
    while stack:
        dom = stack.pop()
        assert dom.box_lo is not None and dom.box_hi is not None
        if dom.k == 1 or len(dom.atoms) <= dom.k:
            boxes[dom.first_part, :, 0], boxes[dom.first_part, :, 1] = dom.box_lo, dom.box_hi
            axis_, plane_, _, _ = nodes[dom.node]
            leaf = -dom.first_part - 1  # the whole domain is its first part's region
            nodes[dom.node] = (axis_, plane_, leaf, leaf)
        if dom.k == 1:
            part[dom.atoms] = dom.first_part
            continue
        n_dom = len(dom.atoms)
        if n_dom <= dom.k:  # no room: one atom per part, the rest stay empty
            part[dom.atoms] = dom.first_part + np.arange(n_dom)
            continue
        thickness = np.where(dom.wraps, spacing, (dom.hi - dom.lo) * spacing)
        grid = dom.grid or _estimate(dom.k, thickness, dom.wraps, period, n_dom, graph.cutoff, cost)
        pieces = np.array(grid)
        # Cut the axis with the most pieces; ties: the thickest, then the last axis.
        order = np.lexsort((np.arange(3), thickness, pieces))
        axis = int(order[-1])
        k_left = int(dom.k * (pieces[axis] // 2) // pieces[axis])
        fraction = k_left / dom.k
        atoms = dom.atoms
        w = weight[atoms]
        lo, hi, wraps = dom.lo.copy(), dom.hi.copy(), dom.wraps.copy()
        box_lo, box_hi = dom.box_lo.copy(), dom.box_hi.copy()
        if wraps[axis]:
            window = min(_BINS // 4, math.ceil(graph.cutoff / spacing[axis] * _BINS))
            if axis not in origins:  # chosen on all atoms, then shared: cuts stay aligned
                origins[axis] = _free_origin(frac[:, axis], weight, fraction, window)
            origin = origins[axis]
            origins_arr[axis] = origin
            coord[atoms, axis] = origin + np.mod(frac[atoms, axis] - origin, 1.0)
            lo[axis], hi[axis] = origin, origin + 1.0
            wraps[axis] = False
            box_lo[axis], box_hi[axis] = origin, origin + 1.0
        c = coord[atoms, axis]
        sort = np.argsort(c, kind="stable")
        cum = np.cumsum(w[sort])
        target = fraction * cum[-1]
        s = int(np.searchsorted(cum, target))
        if s > 0 and target - cum[s - 1] <= cum[s] - target:
            s -= 1
        s = min(max(s + 1, k_left), n_dom - (dom.k - k_left))  # left = sort[:s]
        plane = 0.5 * (c[sort[s - 1]] + c[sort[s]])
        left_hi, right_lo = hi.copy(), lo.copy()
        left_hi[axis] = right_lo[axis] = plane
        left_box_hi, right_box_lo = box_hi.copy(), box_lo.copy()
        left_box_hi[axis] = right_box_lo[axis] = plane
        left_node, right_node = len(nodes), len(nodes) + 1
        nodes[dom.node] = (axis, float(plane), left_node, right_node)
        nodes.extend([(0, 0.0, -1, -1), (0, 0.0, -1, -1)])
        stack.append(
            _Domain(
                atoms[sort[s:]],
                right_lo,
                hi,
                wraps,
                dom.k - k_left,
                dom.first_part + k_left,
                _with(grid, axis, pieces[axis] - pieces[axis] // 2),
                right_box_lo,
                box_hi,
                right_node,
            )
        )
        stack.append(
            _Domain(
                atoms[sort[:s]],
                lo,
                left_hi,
                wraps.copy(),
                k_left,
                dom.first_part,
                _with(grid, axis, pieces[axis] // 2),
                box_lo,
                left_box_hi,
                left_node,
            )
        )
    return part, layout
