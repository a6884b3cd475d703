"""Wigner-D of real harmonics: the e3nn convention, in float64 regardless of defaults."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from atomshard.nn.wigner import edge_frame_rotation, wigner_D, wigner_D_from_matrix


@pytest.mark.parametrize("l", [0, 1, 2, 3, 4])
def test_rotates_spherical_harmonics(l: int) -> None:
    gen = torch.Generator().manual_seed(l)
    rot = o3.rand_matrix(3, dtype=torch.float64)
    x = torch.randn(11, 3, dtype=torch.float64, generator=gen)
    d = wigner_D_from_matrix(l, rot)
    assert d.dtype == torch.float64
    for r, dr in zip(rot, d, strict=True):
        lhs = o3.spherical_harmonics(l, x @ r.T, normalize=True)
        rhs = o3.spherical_harmonics(l, x, normalize=True) @ dr.T
        assert torch.allclose(lhs, rhs, atol=1e-13, rtol=0)
        assert torch.allclose(dr @ dr.T, torch.eye(2 * l + 1, dtype=torch.float64), atol=1e-13)


def test_float64_even_with_float32_default() -> None:
    assert torch.get_default_dtype() == torch.float32
    rot = o3.rand_matrix(dtype=torch.float64)
    d1 = wigner_D_from_matrix(1, rot)
    assert torch.allclose(d1, rot, atol=1e-14, rtol=0)  # l=1 is (x, y, z)


def test_edge_frame_takes_y_to_edge() -> None:
    vec = torch.tensor(
        [[1.0, 2.0, 3.0], [0.0, -1.5, 0.0], [0.0, 2.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64
    )
    d = edge_frame_rotation(vec, 2)
    assert d.shape == (4, 9, 9)
    y = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.allclose(d[:, 1:4, 1:4] @ y, vec / vec.norm(dim=1, keepdim=True), atol=1e-14)
    eye = torch.eye(9, dtype=torch.float64).expand(4, 9, 9)
    assert torch.allclose(d @ d.transpose(1, 2), eye, atol=1e-13)


def test_improper_rotation_rejected() -> None:
    with pytest.raises(ValueError, match="proper"):
        wigner_D_from_matrix(1, -torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("l", [0, 1, 2, 4, 6])
def test_closed_form_equals_matrix_exponentials(l: int) -> None:
    """wigner_D (closed-form rotations about y) == exp(a g_y) exp(b g_x) exp(c g_y)."""
    torch.set_default_dtype(torch.float64)  # e3nn builds generators in the default dtype
    try:
        gx, gy = o3.so3_generators(l)[:2]
    finally:
        torch.set_default_dtype(torch.float32)
    gen = torch.Generator().manual_seed(l)
    a, b, c = (2 * torch.pi * torch.rand(50, dtype=torch.float64, generator=gen) for _ in "abc")
    ref = (
        torch.matrix_exp(a[:, None, None] * gy)
        @ torch.matrix_exp(b[:, None, None] * gx)
        @ torch.matrix_exp(c[:, None, None] * gy)
    )
    assert torch.allclose(wigner_D(l, a, b, c), ref, atol=1e-13, rtol=0)
