"""SO(2) linear layers commute with rotations about the edge (polar, +y) axis."""

from __future__ import annotations

import torch
from e3nn import o3

from atomshard.nn.so2 import SO2Linear, m_major_indices
from atomshard.nn.wigner import block_diagonal_wigner, edge_frame_rotation


def test_indices() -> None:
    assert m_major_indices(2, 0) == ([0, 2, 6], [0, 2, 6])
    assert m_major_indices(2, 2) == ([4], [8])


def test_commutes_with_rotation_about_y() -> None:
    torch.manual_seed(0)
    layer = SO2Linear(3, 5, 4).double()
    x = torch.randn(6, 16, 5, dtype=torch.float64)
    angle = torch.tensor(0.83, dtype=torch.float64)
    zero = torch.zeros((), dtype=torch.float64)
    d = block_diagonal_wigner(3, angle, zero, zero)  # rotation about y
    assert torch.allclose(layer(d @ x), d @ layer(x), atol=1e-12)
    # but not with a generic rotation (the layer is not a full SO(3) map)
    a, b, c = o3.rand_angles(dtype=torch.float64)
    g = block_diagonal_wigner(3, a, b, c)
    assert not torch.allclose(layer(g @ x), g @ layer(x), atol=1e-3)


def test_edge_frame_convolution_is_equivariant() -> None:
    """rotate-in, SO(2), rotate-out gives an SO(3)-equivariant edge map."""
    torch.manual_seed(1)
    layer = SO2Linear(2, 3, 3).double()
    vec = torch.randn(5, 3, dtype=torch.float64)
    x = torch.randn(5, 9, 3, dtype=torch.float64)
    rot = o3.rand_matrix(dtype=torch.float64)
    g = block_diagonal_wigner(2, *o3.matrix_to_angles(rot))

    def conv(v: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        d = edge_frame_rotation(v, 2)
        return d @ layer(d.transpose(1, 2) @ f)

    assert torch.allclose(conv(vec @ rot.T, g @ x), g @ conv(vec, x), atol=1e-12)
