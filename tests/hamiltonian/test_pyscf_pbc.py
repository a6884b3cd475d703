"""PySCF PBC ground truth: real-space H(R), S(R) blocks against PySCF's Bloch matrices.

A 2-atom primitive Si cell (rattled, gth-szv-molopt-sr, 8 orbitals, low ``ke_cutoff``)
keeps every test to a few seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from atomshard.errors import InputError
from atomshard.hamiltonian.assembly import BlochAssembler
from atomshard.hamiltonian.files import read_block_file
from atomshard.hamiltonian.pyscf_pbc import (
    PbcConfig,
    PbcDatasetConfig,
    bloch_grid,
    gamma_scf,
    generate_pbc_dataset,
    perturbed_cell,
    run_pbc,
)
from atomshard.units import HARTREE

pytest.importorskip("pyscf")

KE = 12.0  # Hartree: coarse FFT grid, fast; the checks are self-consistent at any cutoff


def _si2():  # type: ignore[no-untyped-def]
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.431)
    atoms.positions[1] += [0.07, -0.04, 0.03]
    return atoms


def _pyscf_bloch(mf, frac_k: np.ndarray):  # type: ignore[no-untyped-def]
    """PySCF's own H(k), S(k) (Hartree, PySCF order) with the Γ-point SCF density of ``mf``
    (PySCF's band-structure path, ``get_bands``' matrices)."""
    cell = mf.cell
    dm = mf.make_rdm1()
    kpts = cell.get_abs_kpts(frac_k)
    h = np.asarray(mf.get_hcore(cell, kpts)) + np.asarray(mf.get_veff(cell, dm, kpts_band=kpts))
    s = np.asarray(cell.pbc_intor("int1e_ovlp", hermi=1, kpts=kpts))
    return h, s, np.asarray(mf.get_fock(dm=dm)), cell


@pytest.fixture(scope="module")
def exact() -> tuple:  # type: ignore[type-arg]
    """3x3x3 grid, every translation class kept: the inversion is exact on that grid."""
    atoms = _si2()
    cfg = PbcConfig(ke_cutoff=KE, kmesh=(3, 3, 3), block_cutoff=math.inf)
    mf = gamma_scf(atoms, cfg)
    return mf, run_pbc(atoms, cfg, scf=mf)


def test_blocks_reproduce_pyscf_bloch_matrices_on_the_grid(exact) -> None:  # type: ignore[no-untyped-def]
    mf, res = exact
    assert res.converged and res.kmesh == (3, 3, 3) and res.dropped_max == 0.0
    assert res.hamiltonian.n_blocks == 27 * 4
    # the grid's Γ-centred points (PySCF's H(k + G) differs from H(k) by its FFT grid's
    # error, ~1e-5 Ha at this coarse cutoff, so k is taken where the inversion took it)
    frac = np.array([[0, 0, 0], [1 / 3, 0, 0], [1 / 3, -1 / 3, 0], [-1 / 3, 1 / 3, 1 / 3]])
    h_k, s_k, fock_gamma, _ = _pyscf_bloch(mf, frac)
    species = res.hamiltonian.species
    for n, k in enumerate(frac):
        ours_h = BlochAssembler(res.hamiltonian, res.basis).at(k).toarray()
        ours_s = BlochAssembler(res.overlap, res.basis).at(k).toarray()
        ref_h = res.basis.convert_matrix(h_k[n], species, "pyscf") * HARTREE
        ref_s = res.basis.convert_matrix(s_k[n], species, "pyscf")
        assert np.abs(ours_h - ref_h).max() <= 1e-9  # eV
        assert np.abs(ours_s - ref_s).max() <= 1e-12
    # Γ: the SCF's own Fock matrix (a separate PySCF path, real arithmetic)
    gamma = BlochAssembler(res.hamiltonian, res.basis).at([0, 0, 0]).toarray().real
    want = res.basis.convert_matrix(fock_gamma, species, "pyscf") * HARTREE
    assert np.abs(gamma - want).max() <= 1e-9
    assert res.hamiltonian.max_hermiticity_error() <= 1e-10


def test_multigrid_blocks_reproduce_its_own_bloch_matrices_and_agree_with_fftdf() -> None:
    """``integrals="multigrid"`` (PySCF's multigrid J + XC): the blocks reproduce that
    SCF's own Γ Fock matrix and its Bloch matrices on the grid (the same self-consistency
    as FFTDF), and for soft Si at 30 Ha both evaluate the same Kohn–Sham potential
    (blocks within 1 meV)."""
    atoms = _si2()
    mg = PbcConfig(ke_cutoff=30.0, kmesh=(2, 2, 2), block_cutoff=math.inf, integrals="multigrid")
    mf = gamma_scf(atoms, mg)
    assert type(mf._numint).__name__ == "MultiGridNumInt"
    res = run_pbc(atoms, mg, scf=mf)
    assert res.converged and res.hamiltonian.n_blocks == 8 * 4
    species = res.hamiltonian.species
    dm = mf.make_rdm1()
    frac = np.array([[0, 0, 0], [0.5, 0, 0], [0.5, -0.5, 0.5]])
    kpts = mf.cell.get_abs_kpts(frac)
    h_k = np.asarray(mf.get_hcore(mf.cell, kpts)) + np.asarray(
        mf.get_veff(mf.cell, dm[None], kpts_band=kpts)
    )
    for n, k in enumerate(frac):
        ours = BlochAssembler(res.hamiltonian, res.basis).at(k).toarray()
        ref = res.basis.convert_matrix(h_k[n], species, "pyscf") * HARTREE
        # multigrid's H(k) at these time-reversal points carries ~2e-8 eV of imaginary
        # round-off that the real inversion drops
        assert np.abs(ours - ref).max() <= 1e-7
    gamma = BlochAssembler(res.hamiltonian, res.basis).at([0, 0, 0]).toarray().real
    fock = res.basis.convert_matrix(np.asarray(mf.get_fock(dm=dm)), species, "pyscf") * HARTREE
    assert np.abs(gamma - fock).max() <= 1e-6  # the SCF's real Γ path: ~2e-7 eV apart
    fft = run_pbc(atoms, PbcConfig(ke_cutoff=30.0, kmesh=(2, 2, 2), block_cutoff=math.inf))
    diff = max(
        float(np.abs(a - b).max())
        for a, b in zip(res.hamiltonian.blocks, fft.hamiltonian.blocks, strict=True)
    )
    assert diff <= 1e-3  # eV
    assert abs(res.energy - fft.energy) <= 1e-3


def test_default_grid_off_grid_k_and_direct_overlaps() -> None:
    """Automatic grid, blocks within 6 Å: S(R) equals the direct two-centre overlap of
    the translated cell (no lattice sum) and H(k) at a generic k is PySCF's up to the
    dropped far blocks."""
    from pyscf import gto as mgto

    atoms = _si2()
    cfg = PbcConfig(ke_cutoff=KE, block_cutoff=6.0, image_range=9.0)
    mf = gamma_scf(atoms, cfg)
    res = run_pbc(atoms, cfg, scf=mf)
    assert res.kmesh == bloch_grid(atoms.cell.array, 6.0, 9.0)
    cell = mf.cell
    species = res.overlap.species
    worst = 0.0
    for (rx, ry, rz, i, j), blk in zip(res.overlap.atom_pairs.tolist(), res.overlap.blocks):
        shifted = cell.copy()
        shift = np.array([rx, ry, rz]) @ cell.lattice_vectors()
        shifted.atom = [(s, c + shift) for s, c in zip(cell.elements, cell.atom_coords())]
        shifted.unit = "Bohr"
        shifted.build()
        direct = mgto.intor_cross("int1e_ovlp", cell, shifted)
        direct = res.basis.convert_matrix(direct, species, "pyscf")
        oi, oj = res.basis.offsets(species)[i], res.basis.offsets(species)[j]
        worst = max(worst, float(np.abs(blk - direct[oi : oi + 4, oj : oj + 4]).max()))
    assert worst <= 1e-6
    k = np.array([[0.137, -0.261, 0.402]])
    h_k, _, _, _ = _pyscf_bloch(mf, k)
    ours = BlochAssembler(res.hamiltonian, res.basis).at(k[0]).toarray()
    ref = res.basis.convert_matrix(h_k[0], species, "pyscf") * HARTREE
    # what is missing at a generic k: the blocks beyond 6 Å (tens of them, up to
    # res.dropped_max each; ~0.1 eV in all at this cutoff); a wrong phase sign or image
    # assignment would be off by eV
    assert 0.0 < res.dropped_max <= 0.05
    assert np.abs(ours - ref).max() <= 0.15


def test_dataset_round_trip_resume_and_failures(tmp_path: Path) -> None:
    atoms = _si2()
    pbc = PbcConfig(ke_cutoff=KE, block_cutoff=5.0, image_range=6.0)
    cfg = PbcDatasetConfig(pbc=pbc, n_configs=2, rattle=0.05, strain=0.02, seed=3)
    lines: list[str] = []
    report = generate_pbc_dataset([atoms], tmp_path, cfg, log=lines.append)
    assert report["written"] == ["00000.h5", "00001.h5"] and not report["failed"]
    f = read_block_file(tmp_path / "00001.h5")
    geo = perturbed_cell(atoms, cfg, 0, 1)
    assert np.allclose(f.positions, geo.positions) and np.allclose(f.cell, geo.cell.array)
    assert not np.allclose(f.cell, atoms.cell.array)  # strained
    assert f.metadata["n_electrons"] == 8 and f.metadata["valence_electrons"] == {"Si": 4}
    direct = run_pbc(geo, pbc)
    for got, want in zip(f.matrices["H"].blocks, direct.hamiltonian.blocks, strict=True):
        assert np.array_equal(got, want)  # written and read back exactly
    assert np.array_equal(f.matrices["S"].atom_pairs, direct.overlap.atom_pairs)
    timings = (tmp_path / "timings.csv").read_text().splitlines()
    assert len(timings) == 3 and timings[0].startswith("file,atoms")
    assert any("00000.h5: 2 atoms" in line for line in lines)
    again = generate_pbc_dataset([atoms], tmp_path, cfg, log=lines.append)
    assert again["existing"] == ["00000.h5", "00001.h5"] and not again["written"]
    with pytest.raises(InputError, match="other settings"):
        generate_pbc_dataset([atoms], tmp_path, PbcDatasetConfig(pbc=pbc, n_configs=3))
    with pytest.raises(InputError, match="other settings"):
        mg = PbcConfig(ke_cutoff=KE, block_cutoff=5.0, image_range=6.0, integrals="multigrid")
        generate_pbc_dataset([atoms], tmp_path, PbcDatasetConfig(pbc=mg, n_configs=2))
    # a folder written before `integrals` existed (no such key) resumes as FFTDF
    manifest = tmp_path / "dataset.json"
    old = json.loads(manifest.read_text())
    del old["config"]["pbc"]["integrals"]
    manifest.write_text(json.dumps(old))
    assert generate_pbc_dataset([atoms], tmp_path, cfg, log=lines.append)["existing"]
    # an SCF that cannot converge: one line naming the structure; skipped or fatal
    bad = PbcDatasetConfig(
        pbc=PbcConfig(ke_cutoff=KE, max_cycle=1, block_cutoff=4.0, image_range=4.0)
    )
    out = tmp_path / "bad"
    rep = generate_pbc_dataset([atoms], out, bad, log=lines.append)
    assert rep["failed"] == ["00000.h5"] and not (out / "00000.h5").exists()
    assert "structure 0 configuration 0 (00000.h5, Si2): SCF did not converge" in lines[-1]
    with pytest.raises(InputError, match=r"structure 0 configuration 0 \(00000.h5"):
        generate_pbc_dataset([atoms], tmp_path / "bad2", bad, stop_on_failure=True)


def test_bad_inputs(tmp_path: Path) -> None:
    from ase.build import molecule

    with pytest.raises(InputError, match="periodic in all three"):
        run_pbc(molecule("H2O"), PbcConfig(), name="water")
    with pytest.raises(InputError, match="cannot build the cell with basis 'no-such-basis'"):
        run_pbc(_si2(), PbcConfig(basis="no-such-basis"), name="si2")
    with pytest.raises(InputError, match="image_range"):
        PbcConfig(block_cutoff=9.0, image_range=5.0)
    with pytest.raises(InputError, match="integrals has an invalid value 'gdf' \\(one of fftdf"):
        PbcConfig(integrals="gdf")
    with pytest.raises(InputError, match="strain"):
        PbcDatasetConfig(pbc=PbcConfig(), strain=0.5)


def test_cli_pyscf_pbc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ase.io import write

    from atomshard.cli import main

    src = tmp_path / "si2.extxyz"
    write(src, _si2())
    out = tmp_path / "data"
    args = ["data", "pyscf-pbc", str(src), "--out", str(out), "--ke-cutoff", str(KE)]
    args += ["--block-cutoff", "4", "--image-range", "4", "--n-configs", "1"]
    assert main(args) == 0
    assert (out / "00000.h5").is_file() and (out / "timings.csv").is_file()
    assert main([*args, "--repeat", "2x1"]) == 2  # one-line error, no traceback
    assert "--repeat must look like 2x2x2" in capsys.readouterr().err
