"""Neighbour lists (vesin) against ASE's, on random, triclinic, partially periodic cells."""

from __future__ import annotations

import ase
import numpy as np
import pytest
from ase.neighborlist import neighbor_list as ase_neighbor_list

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph, NeighborList, Structure, neighbor_list


def _edge_set(src, dst, shifts):
    return sorted(zip(src.tolist(), dst.tolist(), map(tuple, shifts.tolist())))


def _ase_edges(atoms, cutoff):
    i, j, S = ase_neighbor_list("ijS", atoms, cutoff)
    # ASE: vector = pos[j] - pos[i] + S @ cell, i.e. i receives from j.
    return sorted(zip(j.tolist(), i.tolist(), map(tuple, S.tolist())))


def _random_cell(rng, n_atoms, pbc, triclinic):
    cell = np.diag(rng.uniform(4.0, 8.0, size=3))
    if triclinic:
        cell = cell + np.triu(rng.uniform(-2.0, 2.0, size=(3, 3)), k=1)
    frac = rng.random((n_atoms, 3))
    atoms = ase.Atoms(
        numbers=rng.integers(1, 30, n_atoms), scaled_positions=frac, cell=cell, pbc=pbc
    )
    return atoms


@pytest.mark.parametrize(
    "pbc", [(True, True, True), (True, True, False), (False, False, False), (True, False, False)]
)
@pytest.mark.parametrize("triclinic", [False, True])
def test_matches_ase_on_random_cells(rng, pbc, triclinic):
    for _ in range(3):
        atoms = _random_cell(rng, int(rng.integers(1, 25)), pbc, triclinic)
        cutoff = float(rng.uniform(2.0, 9.0))  # often larger than half the cell
        src, dst, shifts = neighbor_list(
            atoms.positions, atoms.cell.array, atoms.pbc, cutoff=cutoff
        )
        assert _edge_set(src, dst, shifts) == _ase_edges(atoms, cutoff)


def test_one_atom_cell_with_long_cutoff():
    # A 1-atom cell with a 12 Å cutoff: the atom is its own neighbour through many images.
    atoms = ase.Atoms(
        "Si",
        positions=[[0.3, 0.2, 0.1]],
        cell=[[3.0, 0, 0], [0.5, 3.1, 0], [0.2, 0.4, 2.9]],
        pbc=True,
    )
    src, dst, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff=12.0)
    assert len(src) > 200
    assert (src == 0).all() and (dst == 0).all()
    assert _edge_set(src, dst, shifts) == _ase_edges(atoms, 12.0)
    # every image appears with its mirror image (both directions of each pair)
    assert {tuple(s) for s in shifts.tolist()} == {tuple(s) for s in (-shifts).tolist()}


def test_edge_vectors_follow_convention(rng):
    atoms = _random_cell(rng, 10, (True, True, True), True)
    graph = AtomicGraph.from_ase(atoms, 5.0)
    vec = graph.edge_vectors().numpy()
    i, j, D = ase_neighbor_list("ijD", atoms, 5.0)
    ref = {(jj, ii, tuple(np.round(d, 8))) for ii, jj, d in zip(i, j, D)}
    got = {
        (s, d, tuple(np.round(v, 8)))
        for s, d, v in zip(graph.src.tolist(), graph.dst.tolist(), vec)
    }
    assert got == ref
    assert (np.linalg.norm(vec, axis=1) < 5.0).all()


def test_skin_list_rebuilds_only_past_half_skin(rng):
    atoms = _random_cell(rng, 30, (True, True, True), False)
    pos, cell, pbc = atoms.positions.copy(), atoms.cell.array, atoms.pbc
    nl = NeighborList(cutoff=3.0, skin=1.0)
    for step in range(20):
        got = nl.edges(pos, cell, pbc)
        ref = neighbor_list(pos, cell, pbc, cutoff=3.0)
        assert _edge_set(*got) == _edge_set(*ref), step
        pos = pos + rng.normal(scale=0.06, size=pos.shape)
    assert 1 < nl.n_builds < 20


def test_bad_structures_are_named():
    with pytest.raises(InputError, match="zero atoms"):
        Structure.from_ase(ase.Atoms())
    bad = ase.Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(InputError, match="atom 1 has a non-finite"):
        Structure.from_ase(bad)
    close = ase.Atoms("H3", positions=[[0, 0, 0], [2, 0, 0], [2.05, 0, 0]])
    with pytest.raises(InputError, match=r"atoms 1 and 2 are only 0\.05"):
        Structure.from_ase(close)
    flat = ase.Atoms("H", cell=[[1, 0, 0], [2, 0, 0], [0, 0, 3]], pbc=True)
    with pytest.raises(InputError, match="singular"):
        Structure.from_ase(flat)
    with pytest.raises(InputError, match="cutoff must be positive"):
        neighbor_list(np.zeros((1, 3)), np.eye(3), np.array([False] * 3), cutoff=0.0)


def test_edges_sorted_by_dst_src_shift(rng):
    atoms = _random_cell(rng, 6, (True, True, True), True)
    src, dst, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff=9.0)
    rows = list(zip(dst.tolist(), src.tolist(), map(tuple, shifts.tolist())))
    assert rows == sorted(rows) and len(set(rows)) == len(rows)


def test_atomic_write_keeps_umask_permissions(tmp_path):
    import os

    from atomshard.utils.files import atomic_write

    with atomic_write(tmp_path / "out.txt") as handle:
        handle.write("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_skin_test_follows_a_changing_cell():
    """A list kept through a cell change (a barostat) is complete while skin_exceeded says so."""
    from atomshard.graph import NeighborList, neighbor_list, skin_exceeded

    rng = np.random.default_rng(11)
    cell = np.array([[7.1, 0.0, 0.0], [1.2, 6.8, 0.0], [0.6, 0.9, 7.4]])
    pbc = np.ones(3, bool)
    frac = rng.random((40, 3))
    positions = frac @ cell
    cutoff, skin = 3.0, 0.6
    kept = NeighborList(cutoff, skin=skin)
    kept.edges(positions, cell, pbc)
    checked = 0
    for step in range(1, 40):
        strain = np.eye(3) + 0.004 * step * np.array([[1, 0.2, 0], [0.2, -0.5, 0.1], [0, 0.1, 0.7]])
        new_cell = cell @ strain
        new_pos = (frac + 0.002 * step * rng.standard_normal((40, 3))) @ new_cell
        exceeded = skin_exceeded(new_pos, positions, new_cell, cell, cutoff=cutoff, skin=skin)
        builds = kept.n_builds
        got = kept.edges(new_pos, new_cell, pbc)
        assert kept.n_builds == builds + exceeded  # the kept list rebuilds exactly then
        if exceeded:
            break
        want = neighbor_list(new_pos, new_cell, pbc, cutoff=cutoff)
        as_set = lambda e: set(zip(e[0].tolist(), e[1].tolist(), map(tuple, e[2].tolist())))  # noqa: E731
        assert as_set(got) == as_set(want), step
        checked += 1
    assert checked >= 3 and exceeded  # strained without a rebuild, then rebuilt
    assert skin_exceeded(positions, positions, cell * 1.3, cell, cutoff=cutoff, skin=skin)
