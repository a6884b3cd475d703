"""Orbital bases, (l, m) conventions and Clebsch–Gordan transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3

from atomshard.errors import InputError
from atomshard.hamiltonian.basis import OrbitalBasis, convention_matrix, parse_shells
from atomshard.hamiltonian.coupled import PairCoupling, coupling_matrix
from atomshard.nn.wigner import wigner_D_from_matrix


def test_parse_shells() -> None:
    assert parse_shells("2s2p1d") == (0, 0, 1, 1, 2)
    assert parse_shells("spd") == (0, 1, 2)
    assert parse_shells([0, 1]) == (0, 1)
    with pytest.raises(InputError, match="cannot parse"):
        parse_shells("2x")


def test_basis_sizes_and_errors() -> None:
    basis = OrbitalBasis(shells={"O": "2s1p", 1: "1s"})
    assert basis.shells == {"H": (0,), "O": (0, 0, 1)}
    assert basis.n_orbitals(8) == 5 and basis.elements == (1, 8)
    assert basis.offsets(np.array([8, 1, 1])).tolist() == [0, 5, 6, 7]
    with pytest.raises(InputError, match="atom 2 is C"):
        basis.check_species(np.array([8, 1, 6]))
    with pytest.raises(InputError, match="unknown element"):
        OrbitalBasis(shells={"Xx": "1s"})
    with pytest.raises(InputError, match="does not match the basis"):
        basis.convert_block(np.zeros((5, 2)), 8, 1, "pyscf")


def test_convention_matrices_orthogonal() -> None:
    for conv in ("pyscf", "deeptb", "standard", "e3nn"):
        for l in range(5):
            q = convention_matrix(l, conv)
            assert np.allclose(q @ q.T, np.eye(2 * l + 1), atol=1e-14)
    # PySCF p is (px, py, pz) like ours; DeePTB p is (py, pz, px)
    assert np.array_equal(convention_matrix(1, "pyscf"), np.eye(3))
    assert np.allclose(convention_matrix(1, "deeptb") @ np.array([2.0, 3.0, 1.0]), [1, 2, 3])
    with pytest.raises(InputError, match="unknown orbital convention"):
        convention_matrix(1, "openmx")


def test_pyscf_ao_values_match_our_harmonics() -> None:
    """``Q @ PySCF AO`` at random points is e3nn's harmonics times a positive radial factor."""
    gto = pytest.importorskip("pyscf.gto")
    mol = gto.M(atom="O 0 0 0", basis="def2-tzvp", charge=-2)  # s, p, d and f shells
    basis = OrbitalBasis.from_pyscf(mol)
    assert basis.shells["O"] == (0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3)
    pts = np.random.default_rng(1).normal(size=(40, 3))
    ao = mol.eval_gto("GTOval_sph", pts)
    o = 0
    for l in basis.shells["O"]:
        ours = ao[:, o : o + 2 * l + 1] @ convention_matrix(l, "pyscf").T
        sh = o3.spherical_harmonics(l, torch.tensor(pts), normalize=True).numpy()
        ratio = ours / sh
        assert np.all(ratio > 0)
        assert np.allclose(ratio, ratio[:, :1], rtol=1e-9)
        o += 2 * l + 1


def test_pyscf_dmatrix_agrees() -> None:
    dmatrix = pytest.importorskip("pyscf.symm.Dmatrix")
    from scipy.spatial.transform import Rotation

    a, b, g = 0.3, 1.1, -0.7
    rot = torch.tensor(Rotation.from_euler("ZYZ", [a, b, g]).as_matrix())
    for l in range(4):
        q = convention_matrix(l, "pyscf")
        ours = wigner_D_from_matrix(l, rot).numpy()
        assert np.allclose(q.T @ ours @ q, dmatrix.Dmatrix(l, a, b, g, reorder_p=True), atol=1e-13)


def test_basis_from_ao_labels() -> None:
    labels = ["0 O 1s", "0 O 2s", "0 O 2px", "0 O 2py", "0 O 2pz", "1 H 1s", "2 H 1s"]
    basis = OrbitalBasis.from_ao_labels(["O", "H", "H"], labels)
    assert basis.shells == {"H": (0,), "O": (0, 0, 1)}


@pytest.mark.parametrize("la,lb", [(0, 0), (1, 1), (1, 2), (2, 2), (3, 2)])
def test_coupling_matrix_orthogonal(la: int, lb: int) -> None:
    u = coupling_matrix(la, lb)
    assert np.allclose(u.T @ u, np.eye(u.shape[0]), atol=1e-13)


def test_pair_coupling_round_trip_and_equivariance() -> None:
    basis = OrbitalBasis(shells={"O": "2s2p1d", "H": "2s1p"})
    pc = PairCoupling.build(basis, 8, 1)
    assert pc.shape == (13, 5)
    assert sum(n * (2 * big_l + 1) for big_l, n in pc.irreps) == pc.size
    rng = np.random.default_rng(0)
    blocks = rng.normal(size=(4, 13, 5))
    assert np.abs(pc.from_coupled(pc.to_coupled(blocks)) - blocks).max() <= 1e-12
    # rotating the block rotates every coupled L copy by D_L
    rot = o3.rand_matrix(dtype=torch.float64)
    d_o, d_h = basis.wigner(8, rot), basis.wigner(1, rot)
    c = pc.to_coupled(blocks[0])
    c_rot = pc.to_coupled(d_o @ blocks[0] @ d_h.T)
    o = 0
    for big_l, n in pc.irreps:
        d_l = wigner_D_from_matrix(big_l, rot).numpy()
        for _ in range(n):
            seg = slice(o, o + 2 * big_l + 1)
            assert np.allclose(c_rot[seg], d_l @ c[seg], atol=1e-12)
            o += 2 * big_l + 1
    t = torch.tensor(blocks)
    assert torch.allclose(pc.from_coupled(pc.to_coupled(t)), t, atol=1e-12)  # type: ignore[arg-type]
