"""Spatial regions of a grid or Low-NN partition: the owner of a point as a function of it.

A partition vector says who owns the atoms it was computed for. A distributed MD run
needs more: after atoms move, each rank must find the new owner of *its* atoms and the
ranks whose region lies within ``cutoff + skin`` of them, without anyone holding the
whole system. :class:`Regions` keeps what the spatial partitioners decided at set-up:

* the lattice frame (cell, pbc) and, per axis, how a wrapped fractional coordinate ``f``
  becomes the partitioner's coordinate ``t`` (``mode`` 0: ``t = f`` on a non-periodic
  axis; 1: ``t = o + mod(f - o, 1)`` on a periodic axis with origin ``o``; 2:
  ``t = mod(f - o, 1)`` on a periodic axis that Low-NN unwrapped at a vacuum gap);
* the assignment rule: the processor grid (``kind == "grid"``) or the Low-NN cut tree
  (``kind == "lownn"``);
* one box per part in ``t`` (infinite on open outer sides, NaN for parts left empty).

:meth:`Regions.owner` is the assignment; :meth:`Regions.near` lists, for each point,
the other parts whose box is within a distance (a conservative test: per axis, the
distance in ``t`` times the spacing of the lattice planes, periodic axes measured around
the period). Plain numpy; serialisable with :meth:`to_dict` (lists and numbers only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from atomshard.errors import InputError
from atomshard.partition._input import PartitionInput, as_partition_input, lattice_frame
from atomshard.partition.grid import grid_layout
from atomshard.partition.lownn import lownn_layout
from atomshard.partition.metrics import CommCostModel

#: Version of :meth:`Regions.to_dict`.
REGIONS_VERSION = 1
_PAD = 1e-9  # fractional slack on box faces: the conservative test never misses by rounding


@dataclass(frozen=True, eq=False)
class Regions:
    """Where each part's atoms live (see the module docstring).

    Shapes:
        cell: ``[3, 3]`` Å; pbc: ``[3]`` bool; modes: ``[3]`` int64; origins: ``[3]``
        boxes: ``[n_parts, 3, 2]`` (lo, hi) in partition coordinates
        nodes (lownn): ``[n_nodes, 4]`` float64 rows ``(axis, plane, left, right)``
        dims, lo, width (grid): ``[3]``
    """

    kind: str
    n_parts: int
    cell: np.ndarray
    pbc: np.ndarray
    modes: np.ndarray
    origins: np.ndarray
    boxes: np.ndarray
    nodes: np.ndarray | None = None
    dims: np.ndarray | None = None
    lo: np.ndarray | None = None
    width: np.ndarray | None = None

    # -- coordinates ----------------------------------------------------------------------
    def coordinates(self, positions: np.ndarray) -> np.ndarray:
        """``[n, 3]`` partition coordinates ``t`` of Cartesian ``positions`` (Å)."""
        frac, _ = lattice_frame(np.asarray(positions, dtype=np.float64), self.cell, self.pbc)
        t = frac.copy()
        for a in range(3):
            o = self.origins[a]
            if self.modes[a] == 1:
                t[:, a] = o + np.mod(frac[:, a] - o, 1.0)
            elif self.modes[a] == 2:
                t[:, a] = np.mod(frac[:, a] - o, 1.0)
        return t

    @property
    def spacing(self) -> np.ndarray:
        """``[3]`` Å between lattice planes ``t`` and ``t + 1`` of each axis."""
        return lattice_frame(np.zeros((0, 3)), self.cell, self.pbc)[1]

    # -- assignment -----------------------------------------------------------------------
    def owner(self, positions: np.ndarray) -> np.ndarray:
        """``[n]`` int64 part of each position (the partitioner's rule, at any position)."""
        t = self.coordinates(positions)
        n = len(t)
        if self.kind == "grid":
            assert self.dims is not None and self.lo is not None and self.width is not None
            dims = self.dims.astype(np.int64)
            index = np.floor((t - self.lo) / self.width * dims).astype(np.int64)
            index = np.clip(index, 0, dims - 1)
            return (index[:, 0] * dims[1] + index[:, 1]) * dims[2] + index[:, 2]
        assert self.nodes is not None
        part = np.zeros(n, np.int64)
        if len(self.nodes) == 0:
            return part
        stack = [(0, np.arange(n))]
        while stack:
            node, rows = stack.pop()
            axis, plane, left, right = self.nodes[node]
            go_left = t[rows, int(axis)] < plane
            for child, sel in ((int(left), rows[go_left]), (int(right), rows[~go_left])):
                if len(sel) == 0:
                    continue
                if child < 0:
                    part[sel] = -child - 1
                else:
                    stack.append((child, sel))
        return part

    def near(
        self, positions: np.ndarray, distance: float, *, exclude: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (row, part): parts whose region may lie within ``distance`` Å of a row.

        Conservative: every part with a point within ``distance`` is listed (the lattice
        plane spacing bounds the Cartesian distance from below); some listed parts may be
        farther. ``exclude`` leaves one part out (the caller's own).

        Returns:
            ``rows [k]`` int64 ascending, ``parts [k]`` int64 ascending within a row.
        """
        t = self.coordinates(positions)
        spacing = self.spacing
        boxes = self.boxes
        filled = ~np.isnan(boxes[:, 0, 0])
        close = np.broadcast_to(filled[None, :], (len(t), self.n_parts)).copy()
        for a in range(3):
            lo = boxes[:, a, 0] - _PAD
            hi = boxes[:, a, 1] + _PAD
            x = t[:, a : a + 1]
            if self.pbc[a]:
                w0 = self.origins[a] if self.modes[a] == 1 else 0.0
                lo, hi = np.maximum(lo, w0 - _PAD), np.minimum(hi, w0 + 1.0 + _PAD)
                gap = np.full((len(t), self.n_parts), np.inf)
                for k in (-1.0, 0.0, 1.0):
                    y = x + k
                    gap = np.minimum(gap, np.maximum(np.maximum(lo - y, y - hi), 0.0))
            else:
                gap = np.maximum(np.maximum(lo - x, x - hi), 0.0)
            gap = np.where(np.isnan(gap), np.inf, gap)
            close &= gap * spacing[a] < distance
        if exclude is not None and 0 <= exclude < self.n_parts:
            close[:, exclude] = False
        rows, parts = np.nonzero(close)
        return rows.astype(np.int64), parts.astype(np.int64)

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (loadable with ``torch.load(weights_only=True)``)."""
        out: dict[str, Any] = {
            "version": REGIONS_VERSION,
            "kind": self.kind,
            "n_parts": self.n_parts,
            "cell": self.cell.tolist(),
            "pbc": [bool(p) for p in self.pbc],
            "modes": self.modes.tolist(),
            "origins": self.origins.tolist(),
            "boxes": self.boxes.tolist(),
        }
        for name in ("nodes", "dims", "lo", "width"):
            value = getattr(self, name)
            out[name] = None if value is None else np.asarray(value).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Regions:
        """Inverse of :meth:`to_dict`."""
        if data.get("version") != REGIONS_VERSION or data.get("kind") not in ("grid", "lownn"):
            raise InputError(
                f"stored partition regions have version {data.get('version')!r} and kind "
                f"{data.get('kind')!r}; this atomshard reads version {REGIONS_VERSION}"
            )

        def arr(name: str, dtype: Any) -> np.ndarray | None:
            value = data.get(name)
            return None if value is None else np.asarray(value, dtype=dtype)

        n_parts = int(data["n_parts"])
        nodes = arr("nodes", np.float64)
        return cls(
            kind=str(data["kind"]),
            n_parts=n_parts,
            cell=np.asarray(data["cell"], dtype=np.float64).reshape(3, 3),
            pbc=np.asarray(data["pbc"], dtype=bool).reshape(3),
            modes=np.asarray(data["modes"], dtype=np.int64).reshape(3),
            origins=np.asarray(data["origins"], dtype=np.float64).reshape(3),
            boxes=np.asarray(data["boxes"], dtype=np.float64).reshape(n_parts, 3, 2),
            nodes=None if nodes is None else nodes.reshape(-1, 4),
            dims=arr("dims", np.int64),
            lo=arr("lo", np.float64),
            width=arr("width", np.float64),
        )


def grid_regions(
    graph: Any, n_parts: int, *, grid: tuple[int, int, int] | None = None
) -> tuple[np.ndarray, Regions]:
    """:func:`~atomshard.partition.grid_partition` and its :class:`Regions`."""
    inp: PartitionInput = as_partition_input(graph)
    part, layout = grid_layout(inp, n_parts, grid=grid)
    dims, lo, width = layout["dims"], layout["lo"], layout["width"]
    pbc = np.asarray(inp.pbc, dtype=bool)
    boxes = np.empty((int(np.prod(dims)), 3, 2))
    index = np.stack(np.unravel_index(np.arange(len(boxes)), tuple(int(d) for d in dims)), 1)
    for a in range(3):
        step = width[a] / dims[a]
        boxes[:, a, 0] = lo[a] + index[:, a] * step
        boxes[:, a, 1] = lo[a] + (index[:, a] + 1) * step
        if not pbc[a]:  # atoms beyond the set-up extent are clamped to the outer bricks
            boxes[index[:, a] == 0, a, 0] = -np.inf
            boxes[index[:, a] == dims[a] - 1, a, 1] = np.inf
    regions = Regions(
        kind="grid",
        n_parts=len(boxes),
        cell=np.array(inp.cell, dtype=np.float64),
        pbc=pbc.copy(),
        modes=np.where(pbc, 1, 0).astype(np.int64),
        origins=np.zeros(3),
        boxes=boxes,
        dims=np.asarray(dims, dtype=np.int64),
        lo=np.asarray(lo, dtype=np.float64),
        width=np.asarray(width, dtype=np.float64),
    )
    return part, regions


def lownn_regions(
    graph: Any, n_parts: int, *, cost_model: CommCostModel | None = None
) -> tuple[np.ndarray, Regions]:
    """:func:`~atomshard.partition.lownn_partition` and its :class:`Regions` (cut tree)."""
    inp: PartitionInput = as_partition_input(graph)
    part, layout = lownn_layout(inp, n_parts, cost_model=cost_model)
    nodes = np.asarray(layout["nodes"], dtype=np.float64).reshape(-1, 4)
    regions = Regions(
        kind="lownn",
        n_parts=int(n_parts),
        cell=np.array(inp.cell, dtype=np.float64),
        pbc=np.asarray(inp.pbc, dtype=bool).copy(),
        modes=np.asarray(layout["modes"], dtype=np.int64),
        origins=np.asarray(layout["origins"], dtype=np.float64),
        boxes=np.asarray(layout["boxes"], dtype=np.float64),
        nodes=nodes,
    )
    return part, regions


#: name -> function returning ``(part, Regions)``; partitioners without regions are absent.
REGION_PARTITIONERS: dict[str, Callable[..., tuple[np.ndarray, Regions]]] = {
    "grid": grid_regions,
    "lownn": lownn_regions,
}
