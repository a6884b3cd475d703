"""AtomicGraph: the data contract every model, partitioner and integrator shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from atomshard.graph._neighbors import neighbor_list
from atomshard.graph._structure import Structure, check_structure


def edge_vectors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    src: torch.Tensor,
    dst: torch.Tensor,
    shifts: torch.Tensor,
) -> torch.Tensor:
    """Edge vectors ``r_k = positions[src] + shifts @ cell - positions[dst]``.

    Differentiable with respect to ``positions`` and ``cell`` (forces and stress).

    Shapes:
        positions: ``[n_atoms, 3]`` float64, Å
        cell: ``[3, 3]`` float64, Å
        src, dst: ``[n_edges]`` int64
        shifts: ``[n_edges, 3]`` int64
        returns: ``[n_edges, 3]``, Å, dtype of ``positions``
    """
    offsets = shifts.to(positions.dtype) @ cell
    return positions.index_select(0, src) + offsets - positions.index_select(0, dst)


@dataclass(frozen=True, eq=False)
class AtomicGraph:
    """Atoms and the directed edges between atoms closer than a cutoff.

    Edges follow the glossary: ``src -> dst``, ``dst`` receives the message, both
    directions of every pair are present, one edge per periodic image.

    Shapes:
        positions: ``[n_atoms, 3]`` float64, Å
        species: ``[n_atoms]`` int64, atomic numbers
        cell: ``[3, 3]`` float64, Å, rows are lattice vectors
        pbc: ``[3]`` bool
        src, dst: ``[n_edges]`` int64
        shifts: ``[n_edges, 3]`` int64
        cutoff: Å (every edge is shorter than it)
    """

    positions: torch.Tensor
    species: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    shifts: torch.Tensor
    cutoff: float

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.src.shape[0])

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @classmethod
    def from_structure(
        cls,
        structure: Structure,
        cutoff: float,
        *,
        device: torch.device | str = "cpu",
        edges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> AtomicGraph:
        """Build the graph of ``structure`` at ``cutoff`` Å (vesin), or with given ``edges``."""
        if edges is None:
            edges = neighbor_list(structure.positions, structure.cell, structure.pbc, cutoff=cutoff)
        src, dst, shifts = edges
        t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
        return cls(
            positions=t(structure.positions, torch.float64),
            species=t(structure.species, torch.int64),
            cell=t(structure.cell, torch.float64),
            pbc=t(structure.pbc, torch.bool),
            src=t(src, torch.int64),
            dst=t(dst, torch.int64),
            shifts=t(shifts, torch.int64),
            cutoff=float(cutoff),
        )

    @classmethod
    def from_ase(cls, atoms, cutoff: float, *, name: str = "structure", **kwargs) -> AtomicGraph:
        """Validate an :class:`ase.Atoms` (see :func:`check_structure`) and build its graph."""
        return cls.from_structure(Structure.from_ase(atoms, name=name), cutoff, **kwargs)

    def structure(self) -> Structure:
        s = Structure(
            positions=self.positions.detach().cpu().numpy(),
            species=self.species.cpu().numpy(),
            cell=self.cell.detach().cpu().numpy(),
            pbc=self.pbc.cpu().numpy(),
        )
        return s

    def edge_vectors(self) -> torch.Tensor:
        """``[n_edges, 3]`` float64 Å, ``positions[src] + shifts @ cell - positions[dst]``."""
        return edge_vectors(self.positions, self.cell, self.src, self.dst, self.shifts)

    def to(self, device: torch.device | str) -> AtomicGraph:
        return AtomicGraph(
            positions=self.positions.to(device),
            species=self.species.to(device),
            cell=self.cell.to(device),
            pbc=self.pbc.to(device),
            src=self.src.to(device),
            dst=self.dst.to(device),
            shifts=self.shifts.to(device),
            cutoff=self.cutoff,
        )


__all__ = ["AtomicGraph", "check_structure", "edge_vectors"]
