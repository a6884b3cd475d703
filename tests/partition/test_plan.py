"""Halo plans: ownership, incoming edges, exact halos, send/recv consistency, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atomshard.errors import InputError
from atomshard.graph import neighbor_list
from atomshard.partition import HaloPlan, PlanError, build_halo_plan, build_halo_plans, check_plans


@pytest.fixture(scope="module")
def graph():
    rng = np.random.default_rng(7)
    n = 150
    cell = np.diag([9.0, 10.0, 11.0])
    pos = rng.uniform(0, 1, (n, 3)) @ cell
    src, dst, shifts = neighbor_list(pos, cell, np.array([True, True, True]), cutoff=4.0)
    return n, src, dst, shifts


@pytest.mark.parametrize("n_parts", [1, 2, 3, 7, 200])
def test_plans_satisfy_contract(graph, n_parts):
    n, src, dst, shifts = graph
    part = np.random.default_rng(n_parts).integers(0, n_parts, n)
    plans = build_halo_plans(src, dst, shifts, n, part, n_parts)
    check_plans(plans, src, dst, n, part, shifts)
    assert sum(p.n_owned for p in plans) == n
    assert sum(p.n_local_edges for p in plans) == len(src)
    for p in plans:
        # brute force: the halo is the set of remote sources of edges into owned atoms
        mine = part[dst] == p.rank
        remote = set(src[mine][part[src[mine]] != p.rank].tolist())
        assert set(p.local_to_global[p.n_owned :].tolist()) == remote
        assert p.n_halo == len(remote)
        for q in p.peers:
            sent = plans[q].local_to_global[plans[q].send[p.rank]] if q in p.recv else []
            assert list(sent) == list(p.local_to_global[p.recv.get(q, [])])
    if n_parts == 200:  # more parts than atoms: empty plans, no crash
        empty = [p for p in plans if p.n_owned == 0]
        assert empty and all(p.n_local == 0 and p.n_local_edges == 0 for p in empty)


def test_one_row_per_remote_atom_with_many_images():
    # two atoms in a tiny periodic cell: many images of each other, one halo row each
    cell = np.eye(3) * 3.0
    pos = np.array([[0.0, 0.0, 0.0], [1.5, 1.5, 1.5]])
    src, dst, shifts = neighbor_list(pos, cell, np.array([True] * 3), cutoff=5.0)
    part = np.array([0, 1])
    plans = build_halo_plans(src, dst, shifts, 2, part, 2)
    check_plans(plans, src, dst, 2, part, shifts)
    assert [p.n_halo for p in plans] == [1, 1]
    assert plans[0].n_local_edges > 10


def test_round_trips(graph, tmp_path):
    n, src, dst, shifts = graph
    part = np.arange(n) % 4
    plans = build_halo_plans(src, dst, shifts, n, part, 4)
    again = [HaloPlan.from_dict(json.loads(json.dumps(p.to_dict()))) for p in plans]
    check_plans(again, src, dst, n, part, shifts)
    for i, p in enumerate(plans):
        p.save(tmp_path / f"plan{i}.npz")
    loaded = [HaloPlan.load(tmp_path / f"plan{i}.npz") for i in range(4)]
    check_plans(loaded, src, dst, n, part, shifts)
    assert build_halo_plan(src, dst, shifts, n, part, 4, rank=2).to_dict() == plans[2].to_dict()


def test_check_plans_catches_tampering(graph):
    n, src, dst, shifts = graph
    part = np.arange(n) % 3
    plans = build_halo_plans(src, dst, shifts, n, part, 3)
    p = plans[1]
    peer = p.peers[0]
    swapped = p.send[peer].copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    bad = HaloPlan(**{**p.__dict__, "send": {**p.send, peer: swapped}})
    with pytest.raises(PlanError, match="order"):
        check_plans([plans[0], bad, plans[2]], src, dst, n, part, shifts)
    with pytest.raises(PlanError, match="shifts"):
        check_plans(plans, src, dst, n, part, shifts + 1)


def test_bad_input(graph, tmp_path):
    n, src, dst, shifts = graph
    with pytest.raises(InputError, match="number of parts"):
        build_halo_plans(src, dst, shifts, n, np.zeros(n, np.int64), 0)
    with pytest.raises(InputError, match=r"part\[3\] = 5"):
        build_halo_plans(src, dst, shifts, n, np.where(np.arange(n) == 3, 5, 0), 2)
    with pytest.raises(InputError, match="shape"):
        build_halo_plans(src, dst, shifts, n, np.zeros(n - 1, np.int64), 2)
    with pytest.raises(InputError, match="rank"):
        build_halo_plan(src, dst, shifts, n, np.zeros(n, np.int64), 2, rank=2)
    with pytest.raises(InputError, match="version"):
        HaloPlan.from_dict({"format": "atomshard.halo_plan", "version": 99})
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="could not read"):
        HaloPlan.load(tmp_path / "junk.npz")


def test_sparse_path_gives_the_same_plans(graph, monkeypatch):
    """Large n_parts * n_atoms switches from lookup tables to sorting: same plans."""
    import atomshard.partition._pairs as pairs
    import atomshard.partition.plan as plan_module

    n, src, dst, shifts = graph
    part = np.random.default_rng(5).integers(0, 6, n)
    dense = build_halo_plans(src, dst, shifts, n, part, 6)
    monkeypatch.setattr(pairs, "DENSE_LIMIT", 0)
    monkeypatch.setattr(plan_module, "DENSE_LIMIT", 0)
    sparse = build_halo_plans(src, dst, shifts, n, part, 6)
    check_plans(sparse, src, dst, n, part, shifts)
    assert [p.to_dict() for p in sparse] == [p.to_dict() for p in dense]
