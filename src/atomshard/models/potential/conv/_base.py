"""What the layout modules of the fused convolution share: its static tables and settings."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from atomshard.models.potential.conv._paths import _Group, _Path, _YSet
from atomshard.models.potential.conv._settings import ConvSettings


class ConvBase(nn.Module):
    """The attributes :class:`FusedUVUConvolution` sets in ``__init__`` (from its
    :class:`~atomshard.models.potential.conv._paths.PathTable`), declared for the layout
    mixins that read them, and its :class:`ConvSettings`."""

    dim_x: int
    dim_out: int
    weight_numel: int
    group_dim: int
    _dim_y: int
    _groups: list[_Group]
    _paths: list[_Path]
    _ysets: list[_YSet]
    _class_shapes: list[tuple[int, int]]
    _x_sizes: list[int]
    _w_sizes: list[int]
    _part_sizes: list[int]
    perm: torch.Tensor
    wperm: torch.Tensor
    wperm_nodes: torch.Tensor
    au_perm: torch.Tensor
    #: the run-time knobs this convolution reads (layout, chunk sizes, recompute, backward)
    settings: ConvSettings

    @property
    def layout(self) -> str:
        """``"edges"``, ``"nodes"`` or ``"auto"`` (:attr:`ConvSettings.layout`)."""
        return self.settings.layout

    @layout.setter
    def layout(self, value: str) -> None:
        self.settings = dataclasses.replace(self.settings, layout=value)

    @property
    def chunk_backward(self) -> str:
        """``"manual"`` or ``"autograd"`` (:attr:`ConvSettings.chunk_backward`)."""
        return self.settings.chunk_backward

    @chunk_backward.setter
    def chunk_backward(self, value: str) -> None:
        self.settings = dataclasses.replace(self.settings, chunk_backward=value)
