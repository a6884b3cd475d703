"""Sparse assembly of ``H(k)``, ``S(k)``; generalised eigenvalues (dense, or the few
nearest an energy by shift-invert); band structures.

``H(k) = sum_R H(R) exp(2πi k·R)`` with ``k`` in fractional reciprocal coordinates and
``R`` the integer translations of the blocks (the convention of DeePTB's Si64 data; atom
positions do not enter the phase, which changes eigenvectors' gauge, not eigenvalues).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

from atomshard.errors import InputError
from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.hamiltonian.blocks import BlockSet

__all__ = [
    "BlochAssembler",
    "band_structure",
    "eigenvalues_near",
    "generalized_eigenvalues",
    "kpath",
    "plot_bands",
]

#: above this many orbitals :func:`generalized_eigenvalues` needs ``n_eigs`` and ``sigma``
DENSE_MAX_ORBITALS = 4000


class BlochAssembler:
    """Precomputed COO layout of a block set; assembles ``M(k)`` as scipy CSR quickly.

    Shapes:
        (assembled matrices) ``[n_orb, n_orb]``, complex128 (float64 at Γ with ``real=True``)
    """

    def __init__(self, blocks: BlockSet, basis: OrbitalBasis) -> None:
        blocks.check_basis(basis)
        offs = basis.offsets(blocks.species)
        self.n_orbitals = int(offs[-1])
        rows, cols, vals, rvec = [], [], [], []
        for (rx, ry, rz, i, j), b in zip(blocks.atom_pairs.tolist(), blocks.blocks, strict=True):
            ni, nj = b.shape
            r = np.repeat(np.arange(offs[i], offs[i] + ni), nj)
            c = np.tile(np.arange(offs[j], offs[j] + nj), ni)
            rows.append(r)
            cols.append(c)
            vals.append(b.reshape(-1))
            rvec.append(np.broadcast_to(np.array([rx, ry, rz]), (ni * nj, 3)))
        self._rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        self._cols = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        self._vals = np.concatenate(vals) if vals else np.zeros(0)
        self._r = np.concatenate(rvec).astype(np.float64) if rvec else np.zeros((0, 3))

    def at(self, k: Sequence[float] | np.ndarray, *, real: bool = False) -> scipy.sparse.csr_matrix:
        """``M(k)`` as CSR (duplicates summed). ``real=True`` only at Γ-equivalent ``k``."""
        k = np.asarray(k, dtype=np.float64).reshape(3)
        phase = np.exp(2j * np.pi * (self._r @ k))
        vals = self._vals * phase
        if real:
            if np.abs(vals.imag).max(initial=0.0) > 1e-12 * max(1.0, np.abs(vals).max(initial=0)):
                raise InputError(f"k = {k.tolist()} gives a complex matrix; drop real=True")
            vals = vals.real
        n = self.n_orbitals
        m = scipy.sparse.coo_matrix((vals, (self._rows, self._cols)), shape=(n, n))
        return m.tocsr()


def _dense(m: scipy.sparse.spmatrix | np.ndarray) -> np.ndarray:
    return np.asarray(m.toarray()) if scipy.sparse.issparse(m) else np.asarray(m)  # type: ignore[union-attr]


def generalized_eigenvalues(
    h: scipy.sparse.spmatrix | np.ndarray,
    s: scipy.sparse.spmatrix | np.ndarray,
    *,
    n_eigs: int | None = None,
    sigma: float | None = None,
) -> np.ndarray:
    """Eigenvalues of ``H ψ = ε S ψ`` (ascending).

    Dense (all eigenvalues) when ``sigma`` is None; otherwise the ``n_eigs`` eigenvalues
    nearest ``sigma`` by sparse shift-invert Lanczos (for matrices too big to densify).

    Shapes:
        h, s: ``[n_orb, n_orb]`` Hermitian, ``s`` positive definite
        returns: ``[n_orb]`` or ``[n_eigs]`` float64, units of ``h``
    """
    n = h.shape[0]
    if sigma is None:
        if n > DENSE_MAX_ORBITALS:
            raise InputError(
                f"{n} orbitals is too many for a dense solve; give n_eigs and "
                "sigma for the sparse shift-invert solver"
            )
        hd = _dense(h)
        sd = _dense(s)
        try:
            return np.asarray(scipy.linalg.eigh(hd, sd, eigvals_only=True))
        except np.linalg.LinAlgError as exc:
            raise InputError(f"overlap matrix is not positive definite ({exc})") from None
    if n_eigs is None or not 0 < n_eigs < n - 1:
        raise InputError(f"n_eigs must be in 1..{n - 2} for the sparse solver, got {n_eigs}")
    return eigenvalues_near(h, sigma, n_eigs, s=s)


def eigenvalues_near(
    h: scipy.sparse.spmatrix | np.ndarray,
    sigma: float,
    n_eigs: int,
    *,
    s: scipy.sparse.spmatrix | np.ndarray | None = None,
) -> np.ndarray:
    """The ``n_eigs`` eigenvalues of ``H`` (``H ψ = ε S ψ`` with ``s``) nearest ``sigma``.

    Shift-invert Lanczos (``scipy.sparse.linalg.eigsh`` with ``sigma``): one sparse LU of
    ``H - σS``, no dense matrix. Ascending, units of ``h``.
    """
    n = h.shape[0]
    if not 0 < n_eigs < n - 1:
        raise InputError(f"n_eigs must be in 1..{n - 2} for a {n}-orbital matrix, got {n_eigs}")
    hs = scipy.sparse.csc_matrix(h)
    ms = None if s is None else scipy.sparse.csc_matrix(s)
    vals = scipy.sparse.linalg.eigsh(hs, k=n_eigs, M=ms, sigma=sigma, return_eigenvectors=False)
    return np.sort(np.real(vals))


def band_structure(
    h_blocks: BlockSet,
    s_blocks: BlockSet,
    basis: OrbitalBasis,
    kpoints: np.ndarray,
    *,
    n_eigs: int | None = None,
    sigma: float | None = None,
) -> np.ndarray:
    """Band energies at fractional ``kpoints``.

    Shapes:
        kpoints: ``[n_k, 3]`` fractional reciprocal coordinates
        returns: ``[n_k, n_bands]`` float64 (eV for H in eV)
    """
    ha, sa = BlochAssembler(h_blocks, basis), BlochAssembler(s_blocks, basis)
    return np.stack(
        [
            generalized_eigenvalues(ha.at(k), sa.at(k), n_eigs=n_eigs, sigma=sigma)
            for k in np.asarray(kpoints, dtype=np.float64).reshape(-1, 3)
        ]
    )


def kpath(
    cell: np.ndarray, path: str | None = None, npoints: int = 60
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, str]]]:
    """A band path through the special points of ``cell`` (ASE's Setyawan–Curtarolo paths).

    Shapes:
        cell: ``[3, 3]`` Å, rows are lattice vectors
        returns: kpoints ``[npoints, 3]`` fractional, path coordinate ``[npoints]`` (1/Å),
        and ``(coordinate, label)`` of the special points
    """
    from ase.cell import Cell

    bp = Cell(np.asarray(cell, dtype=np.float64)).bandpath(path, npoints=npoints)
    x, special_x, labels = bp.get_linear_kpoint_axis()
    labels = ["Γ" if name == "G" else name for name in labels]
    return np.asarray(bp.kpts), np.asarray(x), list(zip(map(float, special_x), labels, strict=True))


def plot_bands(
    path: str | Path,
    x: np.ndarray,
    bands: dict[str, np.ndarray],
    *,
    special: Sequence[tuple[float, str]] = (),
    window: tuple[float, float] | None = None,
    title: str = "",
) -> None:
    """Plot band energies along a path; several labelled sets overlay (reference, model).

    Shapes:
        x: ``[n_k]`` path coordinate; bands values: ``[n_k, n_bands]`` eV
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    styles = ["-", "--", ":"]
    for n, (label, e) in enumerate(bands.items()):
        lines = ax.plot(x, e, styles[n % 3], color=f"C{n}", lw=1)
        lines[0].set_label(label)
    for pos, _ in special:
        ax.axvline(pos, color="0.7", lw=0.5)
    if special:
        ax.set_xticks([p for p, _ in special], [s for _, s in special])
    if window:
        ax.set_ylim(*window)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylabel("energy (eV)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
