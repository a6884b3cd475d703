"""Band-energy loss for the Hamiltonian model: eigenvalues of the predicted ``H(k)`` with the
reference ``S(k)`` against the reference bands, differentiable through the blocks.

Block errors of a few meV that are coherent over all atoms (on-site levels) move whole
bands by tens of meV; a loss on the generalised eigenvalues ``H(k) ψ = ε S(k) ψ`` near the
gap targets exactly what a device calculation uses. Per structure the reference ``S(k)``
is factorised once (``S = L Lᴴ``), so each step solves the ordinary Hermitian problem
``L⁻¹ H(k) L⁻ᴴ`` with :func:`torch.linalg.eigvalsh`, whose backward
``V diag(∂ε) Vᴴ`` stays finite at degenerate levels (no eigenvector gradient is used).

The bands taken are those of the reference within ``window`` eV below its VBM and above
its CBM (the same set as :func:`atomshard.hamiltonian.metrics.band_errors`); molecules use
Γ alone, periodic structures ``kpoints`` (fractional; default Γ, X, M, R of the cell).
Used as the automatic second stage of :func:`atomshard.train.hamiltonian.train`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from atomshard.errors import InputError
from atomshard.hamiltonian import assembly
from atomshard.hamiltonian.assembly import BlochAssembler, band_structure
from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.hamiltonian.blocks import BlockSet
from atomshard.hamiltonian.metrics import DEFAULT_KPOINTS, electrons_of
from atomshard.models.hamiltonian.data import Sample
from atomshard.models.hamiltonian.model import HamiltonianPrediction

__all__ = [
    "DEFAULT_KPOINTS",
    "BandTarget",
    "band_deviations",
    "band_target",
]


@dataclass(eq=False)
class BandTarget:
    """Everything the band loss of one structure needs, precomputed once.

    Shapes:
        rows, cols: ``[n_values]`` int64 orbital indices of the structure's predicted
            matrix elements, in the order of :func:`_flat_values` (nodes then edges, keys
            as the sample's targets); phases: ``[n_k, n_values]`` complex128
        inv_chol: ``[n_k, n_orb, n_orb]`` complex128 ``L⁻¹`` of ``S(k) = L Lᴴ``
        select: ``[n_k, n_orb]`` bool, the reference bands in the window
        reference: ``[n_k, n_orb]`` float64 eV, reference band energies
    """

    rows: torch.Tensor
    cols: torch.Tensor
    phases: torch.Tensor
    inv_chol: torch.Tensor
    select: torch.Tensor
    reference: torch.Tensor
    counts: dict[tuple[str, tuple[int, int]], int]
    n_orbitals: int

    @property
    def n_bands(self) -> int:
        return int(self.select.sum())


def _keys(sample: Sample) -> list[tuple[str, tuple[int, int]]]:
    return [("node", k) for k in sample.node] + [("edge", k) for k in sample.edge]


def band_target(
    sample: Sample,
    *,
    window: float = 2.0,
    kpoints: Sequence[Sequence[float]] | np.ndarray | None = None,
) -> BandTarget:
    """Precompute the band loss's layout and references for one structure.

    Raises:
        InputError: the file has no overlap ``S``, ``S(k)`` is not positive definite,
            the electron count leaves no gap in the basis, or the structure has more
            orbitals than a dense eigensolver takes.
    """
    src = sample.source
    if "S" not in src.matrices or "H" not in src.matrices:
        raise InputError(f"{sample.name}: the band loss needs reference H and S in the file")
    periodic = bool(np.asarray(src.pbc).any())
    k = DEFAULT_KPOINTS if kpoints is None else np.asarray(kpoints, dtype=np.float64)
    k = k.reshape(-1, 3) if periodic else np.zeros((1, 3))
    basis = src.basis
    offs = torch.as_tensor(basis.offsets(src.species), dtype=torch.int64)
    n_orb = int(offs[-1])
    if n_orb > assembly.DENSE_MAX_ORBITALS:
        raise InputError(
            f"{sample.name}: {n_orb} orbitals is too many for the band loss's dense "
            f"eigensolver (at most {assembly.DENSE_MAX_ORBITALS}); train the band stage "
            "on smaller cells"
        )
    graph = sample.graph
    rows, cols, shifts = [], [], []
    counts: dict[tuple[str, tuple[int, int]], int] = {}
    for kind, key in _keys(sample):
        idx, target = getattr(sample, kind)[key]
        n, ni, nj = target.shape
        counts[(kind, key)] = n
        if kind == "node":
            dst = src_ = idx
            shift = torch.zeros((n, 3), dtype=torch.float64)
        else:
            dst, src_ = graph.dst[idx].cpu(), graph.src[idx].cpu()
            shift = graph.shifts[idx].cpu().to(torch.float64)
        r = offs[dst][:, None, None] + torch.arange(ni)[None, :, None]
        c = offs[src_][:, None, None] + torch.arange(nj)[None, None, :]
        rows.append(r.expand(n, ni, nj).reshape(-1))
        cols.append(c.expand(n, ni, nj).reshape(-1))
        shifts.append(shift[:, None, :].expand(n, ni * nj, 3).reshape(-1, 3))
    shift_all = torch.cat(shifts) if shifts else torch.zeros((0, 3), dtype=torch.float64)
    phases = torch.exp(2j * np.pi * (torch.as_tensor(k) @ shift_all.T))
    s_k = _dense_bloch(src.matrices["S"], basis, k)
    try:
        chol = torch.linalg.cholesky(s_k)
    except torch.linalg.LinAlgError:
        raise InputError(f"{sample.name}: the reference S(k) is not positive definite") from None
    eye = torch.eye(n_orb, dtype=torch.complex128).expand_as(chol)
    inv_chol = torch.linalg.solve_triangular(chol, eye, upper=False)
    ref = band_structure(src.matrices["H"], src.matrices["S"], basis, k)
    n_occ = electrons_of(src, sample.name) // 2
    if not 0 < n_occ < n_orb:
        raise InputError(
            f"{sample.name}: {2 * n_occ} electrons in {n_orb} orbitals leave no gap for "
            "the band loss"
        )
    vbm, cbm = ref[:, :n_occ].max(), ref[:, n_occ:].min()
    select = (ref >= vbm - window) & (ref <= cbm + window)
    return BandTarget(
        rows=torch.cat(rows),
        cols=torch.cat(cols),
        phases=phases,
        inv_chol=inv_chol,
        select=torch.as_tensor(select),
        reference=torch.as_tensor(ref),
        counts=counts,
        n_orbitals=n_orb,
    )


def _dense_bloch(blocks: BlockSet, basis: OrbitalBasis, k: np.ndarray) -> torch.Tensor:
    """Dense ``M(k)`` of a block set (complex128 ``[n_k, n_orb, n_orb]``)."""
    asm = BlochAssembler(blocks, basis)
    return torch.stack([torch.as_tensor(asm.at(kk).toarray()) for kk in k])


def _flat_values(
    pred: HamiltonianPrediction,
    target: BandTarget,
    offsets: dict[tuple[str, tuple[int, int]], int],
) -> torch.Tensor:
    parts = []
    for (kind, key), n in target.counts.items():
        blocks = getattr(pred, kind)[key][1]
        start = offsets.get((kind, key), 0)
        parts.append(blocks[start : start + n].reshape(-1))
    return torch.cat(parts).to(torch.float64)


def _predicted_bands(values: torch.Tensor, target: BandTarget) -> torch.Tensor:
    """Ascending eigenvalues of ``L⁻¹ H(k) L⁻ᴴ`` per k (``[n_k, n_orb]``)."""
    n = target.n_orbitals
    flat = target.rows * n + target.cols
    out = []
    for kk in range(target.phases.shape[0]):
        vals = values.to(torch.complex128) * target.phases[kk]
        h = torch.zeros(n * n, dtype=torch.complex128).index_add(0, flat, vals).view(n, n)
        h = 0.5 * (h + h.conj().T)
        li = target.inv_chol[kk]
        out.append(torch.linalg.eigvalsh(li @ h @ li.conj().T))
    return torch.stack(out)


def band_deviations(
    pred: HamiltonianPrediction,
    samples: Sequence[Sample],
    targets: Sequence[BandTarget],
) -> list[torch.Tensor]:
    """Predicted minus reference band energies (eV) in each structure's window.

    ``pred`` is the model's output on ``samples`` joined by
    :func:`~atomshard.models.hamiltonian.data.collate_samples` (or on the one sample):
    each structure's blocks are a contiguous run of every group, in sample order.
    """
    seen: dict[tuple[str, tuple[int, int]], int] = {}
    out = []
    for target in targets:
        values = _flat_values(pred, target, seen)
        for key, n in target.counts.items():
            seen[key] = seen.get(key, 0) + n
        bands = _predicted_bands(values, target)
        out.append((bands - target.reference)[target.select])
    return out
