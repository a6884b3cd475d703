"""A potential plus its neighbour list, as the integrators see it."""

from __future__ import annotations

import numpy as np
import torch

from atomshard.graph import AtomicGraph, NeighborList
from atomshard.md.state import MDState
from atomshard.models.base import Potential
from atomshard.runtime.blocks import evaluate, resolve_max_atoms


class SerialForceField:
    """Evaluates a :class:`~atomshard.models.base.Potential` on the whole state in one process.

    Keeps a Verlet neighbour list at ``model.cutoff + skin`` that is rebuilt only when an
    atom moved more than ``skin / 2`` (``n_builds`` counts rebuilds). A system larger than
    ``block_atoms`` (halo included; ``"auto"``: from the free memory, None: never) is
    evaluated exactly, block by block (:mod:`atomshard.runtime.blocks`); the blocks are kept
    while the neighbour list is.
    """

    def __init__(
        self,
        model: Potential,
        *,
        skin: float = 1.0,
        stress: bool = True,
        block_atoms: int | str | None = "auto",
    ) -> None:
        self.model = model
        self.neighbors = NeighborList(model.cutoff, skin=skin)
        self.stress = stress
        resolve_max_atoms(model, block_atoms)  # a bad value fails here, not mid-run
        self.block_atoms = block_atoms
        self._blocks: tuple[int, int, torch.Tensor] | None = None  # (builds, atoms, part)

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
        part = None
        if self._blocks is not None and self._blocks[:2] == (self.n_builds, graph.n_atoms):
            part = self._blocks[2]
        out, part = evaluate(
            self.model,
            graph,
            forces=True,
            stress=self.stress and periodic,
            max_atoms=self.block_atoms,
            part=part,
        )
        self._blocks = None if part is None else (self.n_builds, graph.n_atoms, part)
        assert out.forces is not None
        state.forces = out.forces.detach().to(torch.float64)
        state.energy = float(out.energy)
        state.stress = None if out.stress is None else out.stress.detach().to(torch.float64)
