"""ASE calculator for any atomshard potential."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase import Atoms

from atomshard.graph import AtomicGraph, NeighborList, Structure
from atomshard.models.base import Potential
from atomshard.runtime import PotentialCalculator
from atomshard.runtime.blocks import evaluate, resolve_max_atoms


class AtomshardCalculator(PotentialCalculator):
    """ASE calculator: energy, free_energy, per-atom energies, forces, stress.

    Args:
        model: a :class:`~atomshard.models.base.Potential`, or a ``--model`` string
            (checkpoint path, ``sevennet-0``, ``n2p2:FOLDER``).
        device: torch device to evaluate on.
        dtype: optional network body dtype override (``torch.float32``/``torch.float64``).
        skin: neighbour-list skin in Å; with a skin, successive calls on slowly moving
            atoms (MD, relaxations) reuse the list.
        block_atoms: the most atoms (halo included) one evaluation holds at once: larger
            systems are evaluated exactly, block by block (:mod:`atomshard.runtime.blocks`);
            ``"auto"`` (default) picks it from the free memory, None never splits.

    Stress is only available for systems periodic in all three directions.
    """

    def __init__(
        self,
        model: Potential | str,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        skin: float = 0.0,
        block_atoms: int | str | None = "auto",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(model, str):
            from atomshard.models.resolve import resolve_model

            model = resolve_model(model, dtype=dtype)  # type: ignore[assignment]
        assert isinstance(model, Potential)
        self.model = model.to(device)
        self.device = torch.device(device)
        self.neighbors = NeighborList(self.model.cutoff, skin=skin)
        resolve_max_atoms(self.model, block_atoms)  # a bad value fails here, not mid-run
        self.block_atoms = block_atoms
        self._blocks: tuple[int, int, torch.Tensor] | None = None  # (builds, atoms, part)

    def _results(self, atoms: Atoms, periodic: bool) -> dict[str, Any]:
        structure = Structure.from_ase(atoms)
        self.model.check_species(torch.as_tensor(structure.species))
        edges = self.neighbors.edges(structure.positions, structure.cell, structure.pbc)
        graph = AtomicGraph.from_structure(
            structure, self.model.cutoff, device=self.device, edges=edges
        )
        part = None  # the blocks are kept while the neighbour list is
        if self._blocks is not None and self._blocks[:2] == (
            self.neighbors.n_builds,
            len(structure.species),
        ):
            part = self._blocks[2]
        out, part = evaluate(
            self.model, graph, forces=True, stress=periodic, max_atoms=self.block_atoms, part=part
        )
        self._blocks = None if part is None else (self.neighbors.n_builds, graph.n_atoms, part)
        energy = float(out.energy)
        assert out.forces is not None
        results: dict[str, Any] = {
            "energy": energy,
            "free_energy": energy,
            "energies": out.energies.detach().cpu().numpy().astype(np.float64),
            "forces": out.forces.detach().cpu().numpy().astype(np.float64),
        }
        if out.stress is not None:
            s = out.stress.detach().cpu().numpy().astype(np.float64)
            # Voigt order xx, yy, zz, yz, xz, xy, as ASE expects
            results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        return results
