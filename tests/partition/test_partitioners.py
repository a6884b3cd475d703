"""Low-NN, METIS and grid: valid, balanced, contiguous, deterministic, robust."""

from __future__ import annotations

import numpy as np
import pytest

from atomshard.errors import InputError
from atomshard.partition import (
    METHODS,
    PartitionWarning,
    as_partition_input,
    build_halo_plans,
    check_plans,
    compare,
    lownn_partition,
    partition,
    partition_metrics,
    processor_grid,
)

NAMES = ["bulk", "triclinic", "slab", "cluster", "wire"]


@pytest.mark.parametrize("method", ["lownn", "metis", "grid"])
@pytest.mark.parametrize("name", NAMES)
def test_valid_deterministic_and_plannable(structures, name, method):
    g = structures[name]
    for k in (1, 3, 8):
        part = partition(g, k, method=method)
        assert part.dtype == np.int64 and part.shape == (g.n_atoms,)
        assert part.min() >= 0 and part.max() < k
        np.testing.assert_array_equal(part, partition(g, k, method=method))
        plans = build_halo_plans(g.src, g.dst, g.shifts, g.n_atoms, part, k)
        check_plans(plans, g.src, g.dst, g.n_atoms, part, g.shifts)
        if method != "grid":  # a grid brick may fall into vacuum
            assert np.bincount(part, minlength=k).min() > 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [2, 5, 6, 12])
def test_lownn_balances_edges_and_keeps_parts_contiguous(structures, name, k):
    g = structures[name]
    m = partition_metrics(lownn_partition(g, k), g.src, g.dst, k)
    # Cuts are exact to one atom: the tolerance is a few atoms' degree per part.
    per_part = g.n_edges / k
    tolerance = 1 + 3 * g.degree().max() / per_part
    assert m.edge_imbalance <= tolerance, (m.edge_imbalance, tolerance)
    if name in ("bulk", "triclinic", "slab"):
        assert m.edge_imbalance <= 1.05
        assert np.all(m.components == 1)  # spatially contiguous
    assert m.n_empty == 0


def test_lownn_cuts_slabs_first_and_uses_vacuum(structures):
    # Two parts of a bulk cell: one periodic cut, so each part has exactly one neighbour.
    g = structures["bulk"]
    m = partition_metrics(lownn_partition(g, 2), g.src, g.dst, 2)
    assert m.n_neighbours.tolist() == [1, 1]
    # The slab is wrapped by its vacuum: two parts are cut across x or y, never along z.
    slab = structures["slab"]
    part = lownn_partition(slab, 2)
    z = slab.positions[:, 2]
    assert abs(np.median(z[part == 0]) - np.median(z[part == 1])) < 1.0


def test_lownn_long_cell_is_cut_along_its_long_axis(make_graph):
    rng = np.random.default_rng(3)
    cell = np.diag([60.0, 8.0, 8.0])
    g = make_graph(rng.uniform(0, 1, (900, 3)) @ cell, cell, [True] * 3, 3.0)
    part = lownn_partition(g, 4)
    x = g.positions[:, 0]
    spans = [np.ptp(g.positions[part == p, 1]) for p in range(4)]
    assert all(s > 6.0 for s in spans)  # every part spans the short axes
    assert len({int(np.median(x[part == p]) // 15) for p in range(4)}) == 4


def test_more_parts_than_atoms_warns_and_leaves_parts_empty(make_graph):
    g = make_graph([[0, 0, 0], [2.0, 0, 0], [4.0, 0, 0]], np.eye(3) * 10, [True] * 3, 2.5)
    for method in ("lownn", "metis", "grid"):
        with pytest.warns(PartitionWarning, match="empty"):
            part = partition(g, 5, method=method)
        assert part.max() < 5
        plans = build_halo_plans(g.src, g.dst, g.shifts, 3, part, 5)
        check_plans(plans, g.src, g.dst, 3, part, g.shifts)


def test_metrics_match_brute_force(structures):
    g = structures["triclinic"]
    k = 5
    part = partition(g, k, method="metis")
    m = partition_metrics(part, g.src, g.dst, k)
    for p in range(k):
        mine = [e for e in range(g.n_edges) if part[g.dst[e]] == p]
        halo = {int(g.src[e]) for e in mine if part[g.src[e]] != p}
        sent = {
            (q, int(g.src[e]))
            for e in range(g.n_edges)
            if part[g.src[e]] == p and (q := part[g.dst[e]]) != p
        }
        peers = {int(part[a]) for a in halo} | {q for q, _ in sent}
        assert m.owned_nodes[p] == int((part == p).sum())
        assert m.owned_edges[p] == len(mine)
        assert m.halo_rows[p] == len(halo)
        assert m.rows_sent[p] == len(sent)
        assert m.n_neighbours[p] == len(peers)
    assert m.edge_imbalance == pytest.approx(m.owned_edges.max() / (g.n_edges / k))
    # part 0: two slabs 6 Å apart (cutoff 3.5 Å) also through the periodic boundary, two
    # pieces; part 1 fills the gaps between them (2 Å wide) and stays one piece
    bulk = structures["bulk"]
    x = bulk.positions[:, 0]
    split = np.where((x < 2.0) | ((x >= 8.0) & (x < 10.0)), 0, 1)
    assert partition_metrics(split, bulk.src, bulk.dst, 2).components.tolist() == [2, 1]


def test_processor_grid():
    assert processor_grid(8, np.array([10.0, 10.0, 10.0])) == (2, 2, 2)
    assert processor_grid(4, np.array([40.0, 40.0, 10.0])) == (2, 2, 1)
    assert processor_grid(7, np.array([10.0, 10.0, 10.0])) in {(7, 1, 1), (1, 7, 1), (1, 1, 7)}


def test_auto_picks_the_cheapest(structures):
    g = structures["bulk"]
    results = compare(g, 6, methods=METHODS)
    best = min(("lownn", "metis", "grid"), key=lambda n: results[n][1].estimated_time_s)
    assert results["auto"][1].method == f"auto:{best}"
    np.testing.assert_array_equal(partition(g, 6, method="auto"), results[best][0])
    assert all(r[1].partition_time_s >= 0 for r in results.values())


def test_bad_input(structures):
    g = structures["bulk"]
    with pytest.raises(InputError, match=">= 1"):
        partition(g, 0)
    with pytest.raises(InputError, match="integer"):
        partition(g, 2.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown partition method"):
        partition(g, 2, method="spectral")
    with pytest.raises(InputError, match="cutoff must be positive"):
        as_partition_input({**g.__dict__, "cutoff": 0.0})
    with pytest.raises(InputError, match="edge endpoints"):
        as_partition_input({**g.__dict__, "src": g.src + g.n_atoms})
    with pytest.raises(InputError, match="cannot partition"):
        partition(object(), 2)


def test_amorphous_hfo2_goals(make_graph):
    """3,000-atom a-HfO2 at 6 Å into 16 parts: Low-NN balanced, contiguous, few neighbours."""
    from atomshard.io.structures import read_structures

    (atoms,) = read_structures("a-hfo2")
    g = make_graph(atoms.positions, atoms.cell[:], atoms.pbc, 6.0)
    results = compare(g, 16, methods=("lownn", "metis"))
    low, metis = results["lownn"][1], results["metis"][1]
    assert low.edge_imbalance <= 1.01
    assert low.n_disconnected == 0
    assert low.n_neighbours.max() <= metis.n_neighbours.max()


def test_partition_layer_imports_nothing_above_graph():
    import ast
    from pathlib import Path

    import atomshard.partition

    allowed = ("atomshard.graph", "atomshard.errors", "atomshard.utils", "atomshard.partition")
    for path in Path(atomshard.partition.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith("torch"), (path.name, name)
                if name.startswith("atomshard"):
                    assert name.startswith(allowed), (path.name, name)


def test_lownn_free_origin_puts_a_cut_in_a_sparse_layer(make_graph):
    rng = np.random.default_rng(8)
    cell = np.diag([40.0, 10.0, 10.0])
    pos = rng.uniform(0, 1, (1500, 3)) @ cell
    pos = pos[(pos[:, 0] < 25.0) | (pos[:, 0] > 28.0)]  # a 3 Å empty layer (< cutoff)
    g = make_graph(pos, cell, [True] * 3, 3.5)
    part = lownn_partition(g, 2)
    x = g.positions[:, 0]
    order = np.argsort(x)
    change = np.flatnonzero(part[order] != np.roll(part[order], 1))
    cuts = 0.5 * (x[order][change] + x[order][change - 1])
    assert len(cuts) == 2  # two planes: periodic slab split
    assert np.any((cuts > 24.5) & (cuts < 28.5)), cuts


def test_accepts_an_atomic_graph():
    from ase.build import bulk

    from atomshard.graph import AtomicGraph

    graph = AtomicGraph.from_ase(bulk("Si", "diamond", a=5.431, cubic=True).repeat(2), 4.0)
    part = partition(graph, 4)
    inp = as_partition_input(graph)
    assert inp.n_edges == graph.n_edges and inp.cutoff == 4.0
    np.testing.assert_array_equal(part, partition(inp, 4))
    assert np.bincount(part).tolist() == [16, 16, 16, 16]
