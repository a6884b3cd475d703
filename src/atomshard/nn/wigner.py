"""Wigner-D matrices of real spherical harmonics, in e3nn's convention, in float64.

The package's one real-spherical-harmonic convention is e3nn's (see
:mod:`atomshard.hamiltonian.basis` for the (l, m) order and its relation to PySCF):
``Y(R r) = D(R) Y(r)`` for every proper rotation ``R``. e3nn builds ``D`` from its
generators in the *default* torch dtype; here the generators are built once in float64
(whatever the default is), so equivariance holds to ~1e-15.

Shapes use ``S = (l_max + 1)**2`` for a flattened ``l = 0..l_max`` feature axis.
"""

from __future__ import annotations

import functools

import torch
from e3nn import o3

__all__ = [
    "block_diagonal_wigner",
    "edge_frame_rotation",
    "rotation_to_angles",
    "wigner_D",
    "wigner_D_from_matrix",
]


@functools.cache
def _generators(l: int) -> tuple[torch.Tensor, torch.Tensor]:
    """e3nn's real so(3) generators about x and y for degree ``l``, float64, CPU."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        gens = o3.so3_generators(l)
    finally:
        torch.set_default_dtype(previous)
    return gens[0].to(torch.float64).contiguous(), gens[1].to(torch.float64).contiguous()


def rotation_to_angles(rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """e3nn Euler angles ``(alpha, beta, gamma)`` (Y-X-Y) of proper rotation matrices.

    Shapes:
        rotation: ``[..., 3, 3]`` float64, acting on column vectors
        returns: three ``[...]`` float64 tensors, radians
    """
    det = torch.linalg.det(rotation)
    if bool(((det - 1.0).abs() > 1e-6).any()):
        raise ValueError(
            f"rotation matrices must be proper (det = +1); got det = {float(det.flatten()[0]):.6g}"
        )
    return o3.matrix_to_angles(rotation)


@functools.cache
def _x_from_y(l: int) -> torch.Tensor:
    """``Q`` with ``Q g_y Q^T = g_x`` (the Wigner-D of a rotation taking y onto x), float64.

    Built once per ``l`` with ``matrix_exp`` of the generators (the rotation by Euler
    angles ``(pi/2, pi/2, 0)``); every other Wigner-D is assembled from it in closed form.
    """
    gx, gy = _generators(l)
    half = torch.tensor(torch.pi / 2, dtype=torch.float64)
    return (torch.matrix_exp(half * gy) @ torch.matrix_exp(half * gx)).contiguous()


def _rotation_about_y(l: int, angle: torch.Tensor) -> torch.Tensor:
    """``exp(angle * g_y)`` in closed form: ``g_y`` couples only ``(l, m)`` with ``(l, -m)``
    and squares to ``-m^2`` on each such pair, so the exponential is
    ``cos(|m| angle) 1 + sin(|m| angle) / |m| g_y``.

    Shapes:
        angle: ``[...]`` float64; returns ``[..., 2l+1, 2l+1]`` float64
    """
    gy = _generators(l)[1].to(angle.device)
    m = torch.arange(-l, l + 1, device=angle.device).abs().to(torch.float64)
    ma = angle[..., None] * m  # [..., 2l+1]
    sin_over_m = torch.where(m > 0, torch.sin(ma) / m.clamp(min=1.0), torch.zeros_like(ma))
    return torch.diag_embed(torch.cos(ma)) + gy * sin_over_m[..., :, None]


def wigner_D(l: int, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Real Wigner-D of degree ``l`` for Euler angles, float64 (e3nn convention).

    ``D = exp(alpha g_y) exp(beta g_x) exp(gamma g_y)`` as in e3nn, evaluated without
    ``matrix_exp``: rotations about y in closed form, and the one about x as
    ``Q exp(beta g_y) Q^T`` (far cheaper per edge than three matrix exponentials, which
    matters because the model recomputes these per chunk of edges; docs/performance.md).

    Shapes:
        alpha, beta, gamma: ``[...]`` float64, radians (broadcast together)
        returns: ``[..., 2l+1, 2l+1]`` float64
    """
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    q = _x_from_y(l).to(alpha.device)
    a, b, c = (_rotation_about_y(l, t.to(torch.float64)) for t in (alpha, beta, gamma))
    return a @ (q @ b @ q.T) @ c


def wigner_D_from_matrix(l: int, rotation: torch.Tensor) -> torch.Tensor:
    """Real Wigner-D of degree ``l`` for rotation matrices: ``Y_l(R r) = D Y_l(r)``.

    Shapes:
        rotation: ``[..., 3, 3]`` float64
        returns: ``[..., 2l+1, 2l+1]`` float64
    """
    return wigner_D(l, *rotation_to_angles(rotation.to(torch.float64)))


def block_diagonal_wigner(
    l_max: int, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    """Block-diagonal Wigner-D over ``l = 0..l_max`` acting on a flattened ``(l, m)`` axis.

    Shapes:
        alpha, beta, gamma: ``[...]`` float64, radians
        returns: ``[..., S, S]`` float64, ``S = (l_max + 1)**2``
    """
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    size = (l_max + 1) ** 2
    out = alpha.new_zeros((*alpha.shape, size, size), dtype=torch.float64)
    for l in range(l_max + 1):
        lo, hi = l * l, (l + 1) ** 2
        out[..., lo:hi, lo:hi] = wigner_D(l, alpha, beta, gamma)
    return out


def edge_frame_rotation(edge_vec: torch.Tensor, l_max: int) -> torch.Tensor:
    """Block-diagonal Wigner-D of the rotation taking the y axis onto each edge direction.

    ``D`` rotates features from the edge frame (edge along +y, e3nn's polar axis) into
    the lab frame; ``D^T`` rotates lab features into the edge frame, where a rotation
    about the edge only mixes the ``(+m, -m)`` pairs (what the SO(2) layers rely on).
    The roll angle about the edge is fixed to zero; SO(2)-equivariant layers make the
    result independent of it.

    Shapes:
        edge_vec: ``[n_edges, 3]`` float64, Å (must be non-zero)
        returns: ``[n_edges, S, S]`` float64
    """
    vec = edge_vec.to(torch.float64)
    vec = vec / vec.norm(dim=-1, keepdim=True)
    alpha, beta = o3.xyz_to_angles(vec)
    return block_diagonal_wigner(l_max, alpha, beta, torch.zeros_like(alpha))
