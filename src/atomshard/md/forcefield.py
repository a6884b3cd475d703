"""A potential plus its neighbour list, as the integrators see it."""

from __future__ import annotations

import numpy as np
import torch

from atomshard.graph import AtomicGraph, NeighborList
from atomshard.md.state import MDState
from atomshard.models.base import Potential, compute_properties


class SerialForceField:
    """Evaluates a :class:`~atomshard.models.base.Potential` on the whole state in one process.

    Keeps a Verlet neighbour list at ``model.cutoff + skin`` that is rebuilt only when an
    atom moved more than ``skin / 2`` (``n_builds`` counts rebuilds).
    """

    def __init__(self, model: Potential, *, skin: float = 1.0, stress: bool = True) -> None:
        self.model = model
        self.neighbors = NeighborList(model.cutoff, skin=skin)
        self.stress = stress

    @property
    def n_builds(self) -> int:
        return self.neighbors.n_builds

    def graph(self, state: MDState) -> AtomicGraph:
        positions = state.positions.detach().cpu().numpy()
        cell = state.cell.cpu().numpy()
        pbc = state.pbc.cpu().numpy()
        src, dst, shifts = self.neighbors.edges(positions, cell, pbc)
        device = state.positions.device
        as_long = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=device)  # noqa: E731
        return AtomicGraph(
            positions=state.positions,
            species=state.species,
            cell=state.cell,
            pbc=state.pbc,
            src=as_long(src),
            dst=as_long(dst),
            shifts=as_long(shifts),
            cutoff=self.model.cutoff,
        )

    def __call__(self, state: MDState) -> None:
        graph = self.graph(state)
        periodic = bool(state.pbc.all())
        out = compute_properties(self.model, graph, forces=True, stress=self.stress and periodic)
        assert out.forces is not None
        state.forces = out.forces.detach().to(torch.float64)
        state.energy = float(out.energy)
        state.stress = None if out.stress is None else out.stress.detach().to(torch.float64)
