"""Block files, edge mapping, sparse assembly and eigenvalues (DeePTB Si64 reference)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from atomshard.errors import InputError
from atomshard.graph import neighbor_list
from atomshard.hamiltonian.assembly import (
    BlochAssembler,
    band_structure,
    generalized_eigenvalues,
    plot_bands,
)
from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.hamiltonian.blocks import BlockSet, EdgeBlocks
from atomshard.hamiltonian.files import BlockFile, read_block_file, read_deeptb, write_block_file
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def si64() -> BlockFile:
    return read_deeptb(shared_data("deeptb_Si64", "Si64.0"))


def test_si64_reference_eigenvalues(si64: BlockFile) -> None:
    h, s = si64.matrices["H"], si64.matrices["S"]
    assert (h.n_blocks, s.n_blocks) == (9434, 5562)
    assert h.max_hermiticity_error() < 1e-14
    e = band_structure(h, s, si64.basis, np.array([[0, 0, 0], [0.5, 0, 0]]))
    assert e.shape == (2, 256)
    assert np.allclose(e[0, [0, 1, 127, 128]], [-6.0082, -5.0315, 6.5282, 8.2787], atol=1e-4)
    assert e[1, 0] == pytest.approx(-5.7566, abs=1e-4)
    # sparse shift-invert around the gap finds the same VBM / CBM
    ha, sa = BlochAssembler(h, si64.basis), BlochAssembler(s, si64.basis)
    near = generalized_eigenvalues(
        ha.at([0, 0, 0], real=True), sa.at([0, 0, 0], real=True), n_eigs=4, sigma=7.4
    )
    assert np.allclose(near[1:3], e[0, 127:129], atol=1e-8)


def test_si64_orbitals_in_our_order(si64: BlockFile) -> None:
    """After conversion the s-p overlap row points against the bond in (x, y, z) order."""
    s = si64.matrices["S"]
    checked = 0
    for (rx, ry, rz, i, j), b in zip(s.atom_pairs.tolist(), s.blocks, strict=True):
        v = si64.positions[j] + np.array([rx, ry, rz]) @ si64.cell - si64.positions[i]
        if i != j and np.linalg.norm(v) < 2.6:
            u = b[0, 1:] / np.linalg.norm(b[0, 1:])
            assert u @ (v / np.linalg.norm(v)) < -0.99
            checked += 1
    assert checked >= 4 * 64


def test_edges_carry_dst_rows(si64: BlockFile) -> None:
    src, dst, shifts = neighbor_list(si64.positions, si64.cell, si64.pbc, cutoff=6.0)
    eb = EdgeBlocks.from_blocks(si64.matrices["H"], si64.basis, src, dst, shifts)
    assert eb.edge_present.all()
    assert eb.uncovered > 0 and eb.uncovered_max < 0.2  # blocks beyond 6 Å are small
    lookup = {
        (s, d, tuple(sh)): k
        for k, (s, d, sh) in enumerate(
            zip(src.tolist(), dst.tolist(), shifts.tolist(), strict=True)
        )
    }
    for k in range(0, len(src), 97):
        rev = lookup[(int(dst[k]), int(src[k]), tuple((-shifts[k]).tolist()))]
        assert np.array_equal(eb.edge[k], eb.edge[rev].T)
    assert np.array_equal(
        eb.node[3], si64.matrices["H"].blocks[si64.matrices["H"].index()[(0, 0, 0, 3, 3)]]
    )


def test_block_file_round_trip(tmp_path: Path, si64: BlockFile) -> None:
    path = tmp_path / "si64.h5"
    write_block_file(
        path,
        basis=si64.basis,
        positions=si64.positions,
        cell=si64.cell,
        pbc=si64.pbc,
        matrices=si64.matrices,
        energy=-1.5,
    )
    back = read_block_file(path)
    assert back.energy == -1.5 and back.basis == si64.basis
    for name in ("H", "S"):
        a, b = si64.matrices[name], back.matrices[name]
        assert np.array_equal(a.atom_pairs, b.atom_pairs)
        assert all(np.array_equal(x, y) for x, y in zip(a.blocks, b.blocks, strict=True))


def test_block_file_errors(tmp_path: Path) -> None:
    basis = OrbitalBasis(shells={"H": "1s"})
    bs = BlockSet(
        species=np.array([1, 1]), atom_pairs=np.array([[0, 0, 0, 0, 1]]), blocks=(np.ones((1, 1)),)
    )
    path = tmp_path / "h2.h5"
    write_block_file(
        path,
        basis=basis,
        positions=np.zeros((2, 3)),
        cell=np.zeros((3, 3)),
        pbc=np.zeros(3, bool),
        matrices={"H": bs},
    )
    with h5py.File(path, "a") as f:
        del f["H/entries"]
    with pytest.raises(InputError, match=r"missing dataset\(s\) \['entries'\]"):
        read_block_file(path)
    with pytest.raises(InputError, match="does not match the basis"):
        BlockSet(
            species=np.array([1, 1]),
            atom_pairs=np.array([[0, 0, 0, 0, 1]]),
            blocks=(np.ones((2, 1)),),
        ).check_basis(basis)
    with pytest.raises(InputError, match="atom 1 is O"):
        BlockSet(species=np.array([1, 8]), atom_pairs=np.zeros((0, 5)), blocks=()).check_basis(
            basis
        )
    with pytest.raises(InputError, match="outside"):
        BlockSet(
            species=np.array([1]), atom_pairs=np.array([[0, 0, 0, 0, 3]]), blocks=(np.ones((1, 1)),)
        )


def test_dense_molecule_and_plot(tmp_path: Path) -> None:
    basis = OrbitalBasis(shells={"H": "1s", "O": "1s1p"})
    species = np.array([8, 1, 1])
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    s = a @ a.T + 6 * np.eye(6)
    h = rng.normal(size=(6, 6))
    h = h + h.T
    hb, sb = (BlockSet.from_dense(m, species, basis) for m in (h, s))
    e = band_structure(hb, sb, basis, np.zeros((1, 3)))[0]
    assert np.allclose(e, generalized_eigenvalues(h, s))
    plot_bands(
        tmp_path / "b.png",
        np.arange(3.0),
        {"ref": np.stack([e] * 3)},
        special=[(0.0, "G"), (2.0, "X")],
    )
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_read_pyscf_npz_eigenvalues() -> None:
    """PySCF matrices read as blocks (eV, our order) keep the reference eigenvalues."""
    import scipy.linalg

    from atomshard.hamiltonian.pyscf_data import read_pyscf_npz
    from atomshard.units import HARTREE

    path = shared_data("pyscf_reference", "water_def2-svp.npz")
    bf = read_pyscf_npz(path)
    assert bf.matrices["H"].n_blocks == 9 and bf.basis.n_orbitals(8) == 14
    ref = np.load(path)
    want = scipy.linalg.eigh(ref["H"], ref["S"], eigvals_only=True) * HARTREE
    got = band_structure(bf.matrices["H"], bf.matrices["S"], bf.basis, np.zeros((1, 3)))[0]
    assert np.allclose(got, want, atol=1e-9)
    assert np.allclose(bf.positions[0], [0.0, 0.0, 0.1173], atol=1e-6)
    with pytest.raises(InputError, match="periodic"):
        read_pyscf_npz(shared_data("pyscf_reference", "si8.npz"))
