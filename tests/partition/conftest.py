"""Small graphs for partition tests: bulk, triclinic, slab + vacuum, cluster, isolated atoms."""

from __future__ import annotations

import numpy as np
import pytest

from atomshard.graph import neighbor_list
from atomshard.partition import PartitionInput


def make_input(pos, cell, pbc, cutoff: float) -> PartitionInput:
    pos, cell, pbc = np.asarray(pos, float), np.asarray(cell, float), np.asarray(pbc, bool)
    src, dst, shifts = neighbor_list(pos, cell, pbc, cutoff=cutoff)
    return PartitionInput(pos, cell, pbc, src, dst, shifts, cutoff)


def _spread(rng, n, box, min_dist=1.2):
    """Uniform random points with a crude minimum distance (rejection, small n only)."""
    out = []
    while len(out) < n:
        p = rng.uniform(0, 1, 3) * box
        if not out or np.min(np.linalg.norm(np.array(out) - p, axis=1)) > min_dist:
            out.append(p)
    return np.array(out)


@pytest.fixture(scope="session")
def make_graph():
    """``make_graph(positions, cell, pbc, cutoff) -> PartitionInput`` (vesin edges)."""
    return make_input


@pytest.fixture(scope="session")
def structures() -> dict[str, PartitionInput]:
    rng = np.random.default_rng(11)
    bulk_cell = np.diag([16.0, 14.0, 12.0])
    bulk = make_input(rng.uniform(0, 1, (900, 3)) @ bulk_cell, bulk_cell, [True] * 3, 3.5)
    tri_cell = np.array([[14.0, 0.0, 0.0], [5.0, 13.0, 0.0], [3.0, 4.0, 12.0]])
    tri = make_input(rng.uniform(0, 1, (700, 3)) @ tri_cell, tri_cell, [True] * 3, 3.5)
    # slab with vacuum along periodic z: the gap (22 Å) is wider than the cutoff
    slab_pos = rng.uniform(0, 1, (800, 3)) * [15.0, 15.0, 8.0] + [0, 0, 20.0]
    slab = make_input(slab_pos, np.diag([15.0, 15.0, 30.0]), [True] * 3, 3.5)
    # two dense blobs and sparse gas in a non-periodic box with a zero cell
    blobs = np.concatenate(
        [
            rng.normal(0, 2.5, (400, 3)),
            rng.normal(0, 2.5, (300, 3)) + np.array([15.0, 3.0, 0.0]),
            rng.uniform(-5, 20, (60, 3)),
        ]
    )
    cluster = make_input(blobs, np.zeros((3, 3)), [False] * 3, 3.0)
    # a wire periodic only in x, plus isolated atoms far away
    wire_pos = np.concatenate(
        [rng.uniform(0, 1, (300, 3)) * [40.0, 4.0, 4.0], [[10.0, 30.0, 30.0], [30.0, -30.0, 0.0]]]
    )
    wire = make_input(wire_pos, np.diag([40.0, 0.0, 0.0]), [True, False, False], 3.0)
    return {"bulk": bulk, "triclinic": tri, "slab": slab, "cluster": cluster, "wire": wire}
