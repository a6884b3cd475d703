"""Clebsch–Gordan transforms: orbital blocks ``H_ij`` <-> coupled basis ``⊕_L``.

A shell pair ``(l_a, l_b)`` block of ``(2l_a+1) x (2l_b+1)`` elements transforms like
``l_a ⊗ l_b = |l_a-l_b| ⊕ ... ⊕ (l_a+l_b)``. With e3nn's Wigner-3j ``C[m_a, m_b, M]``
(normalised to unit Frobenius norm) the columns ``sqrt(2L+1) C[:, :, M]`` of all ``L``
form an orthogonal matrix, so the forward transform is exact to rounding and its inverse
is the transpose.

The coupled vector of a whole atom-pair block is laid out like e3nn irreps
``n_0 x 0 + n_1 x 1 + ...``: for ``L = 0, 1, ...`` the ``n_L`` copies of ``L`` (one per
shell pair containing it, shell pairs in row-major order), each ``2L+1`` long. A rotation
acts on each copy by ``D_L`` (see :func:`atomshard.nn.wigner.wigner_D`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from e3nn import o3

from atomshard.hamiltonian.basis import OrbitalBasis

__all__ = ["PairCoupling", "coupling_matrix"]


@functools.cache
def coupling_matrix(la: int, lb: int) -> np.ndarray:
    """Orthogonal ``U`` with ``coupled = U^T vec(block)``, columns ordered by ``(L, M)``.

    Shapes:
        returns: ``[(2la+1)(2lb+1), (2la+1)(2lb+1)]`` float64
    """
    cols = []
    for big_l in range(abs(la - lb), la + lb + 1):
        c = o3.wigner_3j(la, lb, big_l, dtype=torch.float64).numpy()
        cols.append(np.sqrt(2 * big_l + 1) * c.reshape((2 * la + 1) * (2 * lb + 1), 2 * big_l + 1))
    out = np.concatenate(cols, axis=1)
    out.setflags(write=False)  # cached: callers must not modify it
    return out


@dataclass(frozen=True)
class PairCoupling:
    """Coupled-basis layout and transform of the blocks between elements ``zi`` and ``zj``.

    Attributes:
        irreps: ``((L, n_L), ...)`` for L = 0..max with ``n_L > 0``
        matrix: ``[ni*nj, ni*nj]`` float64, orthogonal; ``coupled = vec(block) @ matrix``
    """

    zi: int
    zj: int
    shape: tuple[int, int]
    irreps: tuple[tuple[int, int], ...]
    matrix: np.ndarray

    @classmethod
    def build(cls, basis: OrbitalBasis, zi: int, zj: int) -> PairCoupling:
        ls_i, ls_j = basis.shell_ls(zi), basis.shell_ls(zj)
        ni, nj = basis.n_orbitals(zi), basis.n_orbitals(zj)
        # (L, shell-pair order, M-columns into vec(block)) gathered then sorted by L
        pieces: list[tuple[int, int, np.ndarray]] = []
        oi = 0
        order = 0
        for la in ls_i:
            oj = 0
            for lb in ls_j:
                u = coupling_matrix(la, lb)
                rows = (
                    (oi + np.arange(2 * la + 1))[:, None] * nj + (oj + np.arange(2 * lb + 1))[None]
                ).reshape(-1)
                col = 0
                for big_l in range(abs(la - lb), la + lb + 1):
                    full = np.zeros((ni * nj, 2 * big_l + 1))
                    full[rows] = u[:, col : col + 2 * big_l + 1]
                    pieces.append((big_l, order, full))
                    col += 2 * big_l + 1
                    order += 1
                oj += 2 * lb + 1
            oi += 2 * la + 1
        pieces.sort(key=lambda p: (p[0], p[1]))
        counts: dict[int, int] = {}
        for big_l, _, _ in pieces:
            counts[big_l] = counts.get(big_l, 0) + 1
        matrix = np.concatenate([p[2] for p in pieces], axis=1)
        return cls(int(zi), int(zj), (ni, nj), tuple(sorted(counts.items())), matrix)

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def to_coupled(self, blocks: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Orbital blocks -> coupled vectors.

        Shapes:
            blocks: ``[..., ni, nj]``
            returns: ``[..., ni*nj]`` in the irreps layout
        """
        flat = blocks.reshape(*blocks.shape[:-2], self.size)
        return flat @ self._matrix_like(blocks)

    def from_coupled(self, coupled: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Coupled vectors -> orbital blocks (the exact inverse of :meth:`to_coupled`).

        Shapes:
            coupled: ``[..., ni*nj]``
            returns: ``[..., ni, nj]``
        """
        flat = coupled @ self._matrix_like(coupled).T
        return flat.reshape(*coupled.shape[:-1], *self.shape)

    def _matrix_like(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if isinstance(x, torch.Tensor):
            return torch.as_tensor(self.matrix, dtype=x.dtype, device=x.device)
        return self.matrix
