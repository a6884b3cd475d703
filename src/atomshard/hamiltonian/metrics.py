"""Band-energy errors of a predicted Hamiltonian against a reference (same overlap).

A predicted ``H`` is judged by the eigenvalues of ``H(k) c = e S(k) c`` with the
*reference* ``S`` (the model predicts ``H`` only): valence-band maximum and
conduction-band minimum over the given k-points (from the number of valence electrons,
two per band), the gap, and the mean absolute error of all band energies within a
window around the gap (bands matched by index at each k).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from atomshard.errors import InputError
from atomshard.hamiltonian.assembly import band_structure
from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.hamiltonian.blocks import BlockSet
from atomshard.hamiltonian.files import BlockFile

__all__ = [
    "DEFAULT_KPOINTS",
    "band_errors",
    "count_electrons",
    "electrons_of",
    "orbital_errors",
    "within_cutoff",
]

#: Γ, X, M, R in fractional reciprocal coordinates (the band checks' default k set)
DEFAULT_KPOINTS = np.array(
    [[0, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0.5, 0.5, 0.5]], dtype=np.float64
)


def count_electrons(species: np.ndarray, valence: Mapping[str, int]) -> int:
    """Electrons of a structure from per-element valence counts (``{"Si": 4}``)."""
    from ase.data import chemical_symbols

    missing = sorted({chemical_symbols[int(z)] for z in species} - set(valence))
    if missing:
        raise InputError(f"no valence electron count for {missing} (have {dict(valence)})")
    return int(sum(valence[chemical_symbols[int(z)]] for z in species))


def electrons_of(source: BlockFile, name: str) -> int:
    """Electrons of a block file's structure: its ``valence_electrons`` (per element) or
    ``n_electrons`` metadata; a molecule without metadata counts all electrons of the
    neutral molecule (an all-electron basis)."""
    if "valence_electrons" in source.metadata:
        return count_electrons(source.species, source.metadata["valence_electrons"])
    if "n_electrons" in source.metadata:
        return int(source.metadata["n_electrons"])
    if not np.asarray(source.pbc).any():
        return int(np.asarray(source.species).sum())
    raise InputError(
        f"{name}: a periodic structure without 'n_electrons' in its metadata (written by "
        "`atomshard data pyscf-pbc`); band edges need it"
    )


def within_cutoff(
    blocks: BlockSet, positions: np.ndarray, cell: np.ndarray, cutoff: float
) -> BlockSet:
    """The blocks whose atoms (with the block's image shift) are at most ``cutoff`` apart
    (node blocks always kept): what a model of that cutoff can represent."""
    p = blocks.atom_pairs
    vec = positions[p[:, 4]] + p[:, :3] @ cell - positions[p[:, 3]]
    keep = np.linalg.norm(vec, axis=1) <= cutoff
    keep |= (p[:, 3] == p[:, 4]) & ~p[:, :3].any(axis=1)
    idx = np.nonzero(keep)[0]
    return BlockSet(
        species=blocks.species,
        atom_pairs=p[idx],
        blocks=tuple(blocks.blocks[k] for k in idx.tolist()),
    )


def band_errors(
    h_pred: BlockSet,
    h_ref: BlockSet,
    s_ref: BlockSet,
    basis: OrbitalBasis,
    n_electrons: int,
    kpoints: np.ndarray,
    *,
    window: float = 2.0,
) -> dict[str, float]:
    """VBM, CBM, gap errors (predicted - reference, eV) and the band-energy MAE within
    ``window`` eV below the reference VBM and above the reference CBM.

    Shapes:
        kpoints: ``[n_k, 3]`` fractional
    """
    if n_electrons % 2:
        raise InputError(f"{n_electrons} electrons: band edges need an even number")
    n_occ = n_electrons // 2
    e_ref = band_structure(h_ref, s_ref, basis, kpoints)
    e_pred = band_structure(h_pred, s_ref, basis, kpoints)
    if not 0 < n_occ < e_ref.shape[1]:
        raise InputError(f"{n_occ} occupied bands of {e_ref.shape[1]}: no gap to look at")
    vbm_ref, cbm_ref = float(e_ref[:, :n_occ].max()), float(e_ref[:, n_occ:].min())
    vbm_pred, cbm_pred = float(e_pred[:, :n_occ].max()), float(e_pred[:, n_occ:].min())
    near = (e_ref >= vbm_ref - window) & (e_ref <= cbm_ref + window)
    return {
        "vbm_ref": vbm_ref,
        "cbm_ref": cbm_ref,
        "gap_ref": cbm_ref - vbm_ref,
        "vbm_error": vbm_pred - vbm_ref,
        "cbm_error": cbm_pred - cbm_ref,
        "gap_error": (cbm_pred - vbm_pred) - (cbm_ref - vbm_ref),
        "band_mae_window": float(np.abs(e_pred - e_ref)[near].mean()),
        "band_max_window": float(np.abs(e_pred - e_ref)[near].max()),
        "n_bands_window": int(near.sum()),
    }


def orbital_errors(
    h_pred: BlockSet,
    h_ref: BlockSet,
    s_ref: BlockSet,
    basis: OrbitalBasis,
    n_electrons: int,
) -> dict[str, float]:
    """A molecule's orbital-energy errors (predicted - reference, eV) with the reference
    ``S``: HOMO, LUMO, HOMO-LUMO gap, and the MAE / max of all occupied eigenvalues."""
    if n_electrons % 2:
        raise InputError(f"{n_electrons} electrons: closed-shell orbitals need an even number")
    n_occ = n_electrons // 2
    gamma = np.zeros((1, 3))
    e_ref = band_structure(h_ref, s_ref, basis, gamma)[0]
    e_pred = band_structure(h_pred, s_ref, basis, gamma)[0]
    if not 0 < n_occ < e_ref.size:
        raise InputError(f"{n_occ} occupied orbitals of {e_ref.size}: no LUMO to look at")
    occ = np.abs(e_pred[:n_occ] - e_ref[:n_occ])
    return {
        "homo_ref": float(e_ref[n_occ - 1]),
        "lumo_ref": float(e_ref[n_occ]),
        "gap_ref": float(e_ref[n_occ] - e_ref[n_occ - 1]),
        "homo_error": float(e_pred[n_occ - 1] - e_ref[n_occ - 1]),
        "lumo_error": float(e_pred[n_occ] - e_ref[n_occ]),
        "gap_error": float((e_pred[n_occ] - e_pred[n_occ - 1]) - (e_ref[n_occ] - e_ref[n_occ - 1])),
        "occupied_mae": float(occ.mean()),
        "occupied_max": float(occ.max()),
        "n_occupied": n_occ,
    }
