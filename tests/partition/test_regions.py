"""Regions of the spatial partitioners: the owner of a point is a function of the point.

For random atoms the region lookup must reproduce the partitioner's assignment exactly
(triclinic cells, non-periodic axes, a periodic slab with a vacuum gap), and
:meth:`Regions.near` must list every part with an atom within the distance.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from atomshard.graph import neighbor_list
from atomshard.partition import (
    PartitionWarning,
    Regions,
    grid_partition,
    grid_regions,
    lownn_partition,
    lownn_regions,
)
from tests.partition.conftest import make_input

CUTOFF = 3.5
TRICLINIC = np.array([[14.0, 0.0, 0.0], [5.0, 13.0, 0.0], [3.0, -4.0, 12.0]])


def _cases():
    rng = np.random.default_rng(5)
    frac = rng.uniform(0, 1, (400, 3))
    slab = frac.copy()
    slab[:, 2] *= 0.45  # a vacuum gap wider than the cutoff along periodic c
    return {
        "triclinic": make_input(frac @ TRICLINIC, TRICLINIC, [True] * 3, CUTOFF),
        "mixed pbc": make_input(frac @ TRICLINIC, TRICLINIC, [True, False, True], CUTOFF),
        "periodic slab with gap": make_input(slab @ TRICLINIC, TRICLINIC, [True] * 3, CUTOFF),
        "cluster": make_input(frac * 18.0, np.zeros((3, 3)), [False] * 3, CUTOFF),
    }


CASES = _cases()
METHODS = {"grid": (grid_regions, grid_partition), "lownn": (lownn_regions, lownn_partition)}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("n_parts", [2, 3, 4, 6, 8])
def test_lookup_reproduces_partitioner(method, case, n_parts):
    graph = CASES[case]
    regions_fn, partition_fn = METHODS[method]
    part, regions = regions_fn(graph, n_parts)
    assert np.array_equal(part, partition_fn(graph, n_parts))
    assert np.array_equal(regions.owner(graph.positions), part)
    # the lookup is per point: any subset gives the same owners
    subset = np.arange(0, graph.n_atoms, 7)
    assert np.array_equal(regions.owner(graph.positions[subset]), part[subset])
    # serialised (restart files) and back: same answers
    again = Regions.from_dict(regions.to_dict())
    assert np.array_equal(again.owner(graph.positions), part)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_atoms_moved_anywhere_get_an_owner_inside_its_box(method, case):
    graph = CASES[case]
    _, regions = METHODS[method][0](graph, 4)
    rng = np.random.default_rng(1)
    moved = graph.positions + rng.normal(0, 3.0, graph.positions.shape)  # leave the extent
    owner = regions.owner(moved)
    assert owner.min() >= 0 and owner.max() < 4
    rows, parts = regions.near(moved, 1e-6)
    listed = set(zip(rows.tolist(), parts.tolist()))
    assert all((i, p) in listed for i, p in enumerate(owner.tolist()))


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_near_lists_every_part_within_distance(method, case):
    """Conservative: each (atom, part owning a neighbour within r, any image) is listed."""
    graph = CASES[case]
    _, regions = METHODS[method][0](graph, 6)
    owner = regions.owner(graph.positions)
    for r in (1.0, 3.0, 6.0):
        src, dst, _ = neighbor_list(graph.positions, graph.cell, graph.pbc, cutoff=r)
        needed = set(zip(src.tolist(), owner[dst].tolist()))
        rows, parts = regions.near(graph.positions, r)
        listed = set(zip(rows.tolist(), parts.tolist()))
        assert needed <= listed, f"r={r}: {sorted(needed - listed)[:5]} missing"
        if r == 1.0:  # and it is not "everyone"
            assert len(listed) < graph.n_atoms * 6


def test_more_parts_than_atoms_leave_regions_empty():
    graph = make_input(np.array([[1.0, 1.0, 1.0], [4.0, 2.0, 2.0]]), np.eye(3) * 6, [True] * 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartitionWarning)
        _, regions = lownn_regions(graph, 4)
    owner = regions.owner(np.random.default_rng(0).uniform(0, 6, (50, 3)))
    assert set(owner.tolist()) <= {0, 1, 2, 3}
    empty = np.isnan(regions.boxes[:, 0, 0])
    assert empty.any() and not empty[owner].any()
