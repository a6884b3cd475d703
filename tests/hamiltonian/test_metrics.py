"""Band-energy errors of a predicted H (with the reference S), and the cutoff filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from atomshard.errors import InputError
from atomshard.hamiltonian.blocks import BlockSet
from atomshard.hamiltonian.files import read_deeptb
from atomshard.hamiltonian.metrics import (
    band_errors,
    count_electrons,
    electrons_of,
    orbital_errors,
    within_cutoff,
)
from tests.bench_scripts import load_benchmark
from tests.conftest import shared_data

K = np.zeros((1, 3))  # Γ: VBM 6.5282, CBM 8.2787 eV (tests/hamiltonian/test_blocks.py)


def test_band_errors_of_a_rigid_shift_and_of_the_cutoff() -> None:
    si = read_deeptb(shared_data("deeptb_Si64", "Si64.0"))
    h, s = si.matrices["H"], si.matrices["S"]
    assert count_electrons(si.species, {"Si": 4}) == 256
    same = band_errors(h, h, s, si.basis, 256, K)
    assert same["vbm_error"] == 0.0 and same["band_mae_window"] == 0.0
    assert same["vbm_ref"] == pytest.approx(6.5282, abs=1e-4)
    assert same["cbm_ref"] == pytest.approx(8.2787, abs=1e-4)
    # H + c S has the eigenvalues of H shifted by c: every error is c, the gap's 0
    hi, si_ = h.index(), s.index()
    keys = sorted(set(hi) | set(si_))
    shifted = BlockSet(
        species=h.species,
        atom_pairs=np.array(keys),
        blocks=tuple(
            (h.blocks[hi[k]] if k in hi else 0.0) + (0.05 * s.blocks[si_[k]] if k in si_ else 0.0)
            for k in keys
        ),
    )
    e = band_errors(shifted, h, s, si.basis, 256, K)
    assert e["vbm_error"] == pytest.approx(0.05, abs=1e-9)
    assert e["cbm_error"] == pytest.approx(0.05, abs=1e-9)
    assert e["gap_error"] == pytest.approx(0.0, abs=1e-9)
    assert e["band_mae_window"] == pytest.approx(0.05, abs=1e-9)
    # a 3 Å cutoff keeps nodes and first neighbours only: bands move
    near = within_cutoff(h, si.positions, si.cell, 3.0)
    assert near.n_blocks == 64 + 64 * 4 and near.n_blocks < h.n_blocks
    assert band_errors(near, h, s, si.basis, 256, K)["band_mae_window"] > 0.01
    with pytest.raises(InputError, match="need an even number"):
        band_errors(h, h, s, si.basis, 255, K)
    with pytest.raises(InputError, match=r"no valence electron count for \['Si'\]"):
        count_electrons(si.species, {"O": 6})


def test_orbital_errors_of_a_molecule() -> None:
    """Ethanol, def2-SVP (PySCF reference in shared data): H + c S moves every orbital
    energy by c (HOMO, LUMO and occupied MAE = c, gap 0); 26 electrons, 13 occupied."""
    from atomshard.hamiltonian.pyscf_data import read_pyscf_npz

    mol = read_pyscf_npz(shared_data("pyscf_reference", "ethanol_def2-svp.npz"))
    h, s = mol.matrices["H"], mol.matrices["S"]
    assert electrons_of(mol, "ethanol") == 26  # all-electron, neutral: no metadata needed
    same = orbital_errors(h, h, s, mol.basis, 26)
    assert same["occupied_mae"] == 0.0 and same["n_occupied"] == 13
    assert 4.0 < same["gap_ref"] < 8.0  # a PBE HOMO-LUMO gap of ethanol, eV
    hi, si_ = h.index(), s.index()
    shifted = BlockSet(
        species=h.species,
        atom_pairs=h.atom_pairs,
        blocks=tuple(h.blocks[hi[k]] + 0.03 * s.blocks[si_[k]] for k in hi),
    )
    e = orbital_errors(shifted, h, s, mol.basis, 26)
    for key in ("homo_error", "lumo_error", "occupied_mae", "occupied_max"):
        assert e[key] == pytest.approx(0.03, abs=1e-9), key
    assert e["gap_error"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InputError, match="need an even number"):
        orbital_errors(h, h, s, mol.basis, 25)
    si = read_deeptb(shared_data("deeptb_Si64", "Si64.0"))
    with pytest.raises(InputError, match="Si64: a periodic structure without 'n_electrons'"):
        electrons_of(si, "Si64")


def test_bench_generalise_smoke(tmp_path: Path) -> None:
    pytest.importorskip("pyscf")
    bench = load_benchmark("bench_hamiltonian_generalise")
    bench.main(["--smoke", "--out", str(tmp_path), "--batch-size", "2", "--band-epochs", "1"])
    record = json.loads((tmp_path / "smoke" / "result.json").read_text())
    assert record["band_epochs"] == 1
    (test,) = record["tests"]
    assert test["atoms"] == 2 and test["edge_mae_meV"] > 0 and "vbm_error_meV" in test
    assert (tmp_path / "smoke" / "test_errors.png").stat().st_size > 1000
    # which blocks carry the band error: both splits are reported, and the on-site split
    # of the reference itself is zero
    for part in ("onsite_only", "edges_only"):
        assert f"{part}_band_mae_window_meV" in test and f"{part}_vbm_error_meV" in test
    # a committee of one model with itself is that model
    args = ["--evaluate-only", "--out", str(tmp_path), "--extra-test", test["name"]]
    bench.main([*args, "--name", "smoke"])
    bench.main([*args, "--name", "committee", "--average-of", "smoke", "smoke"])
    one = json.loads((tmp_path / "smoke" / "extra.json").read_text())[0]
    two = json.loads((tmp_path / "committee" / "extra.json").read_text())[0]
    for key, value in one.items():
        if isinstance(value, float):
            assert two[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
