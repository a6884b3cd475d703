"""Several structures as one disjoint graph, and their energies, forces and stresses.

:func:`~atomshard.models.base.compute_properties` evaluates one system (one cell, one
strain). Training needs a batch: the structures are concatenated into one
:class:`~atomshard.graph.AtomicGraph` whose edges never cross systems, ``system_idx``
says which system each atom belongs to, and :func:`predict_batch` sums the model's
per-atom energies per system (``index_add`` over ``system_idx``). Forces are per atom and
unaffected by batching. For the stress every system gets its own symmetric strain
``ε_s`` applied to its positions and its cell, so ``∂E_s/∂ε_s`` is that system's virial.
The model contract (``atomic_energies(graph, edge_vec, exchange)``) is unchanged: the
model only reads species, ``src``/``dst`` and the edge vectors built here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from atomshard.graph import AtomicGraph
from atomshard.models.base import Potential, identity_exchange
from atomshard.train.data import LabelledStructure


@dataclass(frozen=True, eq=False)
class Batch:
    """A disjoint union of ``n_systems`` labelled structures.

    Shapes:
        graph: the union graph (its ``cell`` is unused; see ``cells``)
        system_idx: ``[n_atoms]`` int64, system of each atom
        cells: ``[n_systems, 3, 3]`` float64 Å
        periodic: ``[n_systems]`` bool, fully periodic with a positive volume
        n_atoms: ``[n_systems]`` float64, atom counts
        energy: ``[n_systems]`` float64 eV (reference; zero where ``energy_mask`` is False)
        energy_mask: ``[n_systems]`` bool, system has a reference energy
        forces: ``[n_atoms, 3]`` float64 eV/Å (zeros where ``force_mask`` is False)
        force_mask: ``[n_atoms]`` bool, atom has a reference force
        stress: ``[n_systems, 3, 3]`` float64 eV/Å³ (zeros where ``stress_mask`` is False)
        stress_mask: ``[n_systems]`` bool, system has a reference stress and is periodic
    """

    graph: AtomicGraph
    system_idx: torch.Tensor
    cells: torch.Tensor
    periodic: torch.Tensor
    n_atoms: torch.Tensor
    energy: torch.Tensor
    energy_mask: torch.Tensor
    forces: torch.Tensor
    force_mask: torch.Tensor
    stress: torch.Tensor
    stress_mask: torch.Tensor

    @property
    def n_systems(self) -> int:
        return int(self.cells.shape[0])


def collate(samples: Sequence[LabelledStructure], *, device: str = "cpu") -> Batch:
    """Join ``samples`` (each carrying edges, see ``with_edges``) into one :class:`Batch`."""
    if not samples:
        raise ValueError("collate needs at least one structure")
    pos: list[np.ndarray] = []
    species: list[np.ndarray] = []
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    shifts: list[np.ndarray] = []
    sys_idx: list[np.ndarray] = []
    forces: list[np.ndarray] = []
    fmask: list[np.ndarray] = []
    stress: list[np.ndarray] = []
    cells: list[np.ndarray] = []
    smask: list[bool] = []
    periodic: list[bool] = []
    energy: list[float] = []
    emask: list[bool] = []
    counts: list[int] = []
    offset = 0
    for k, s in enumerate(samples):
        if s.edges is None or s.cutoff is None:
            raise ValueError(f"{s.source}: call with_edges(cutoff) before collating")
        st = s.structure
        n = st.n_atoms
        e_src, e_dst, e_shift = s.edges
        pos.append(st.positions)
        species.append(st.species)
        src.append(e_src + offset)
        dst.append(e_dst + offset)
        shifts.append(e_shift)
        sys_idx.append(np.full(n, k, dtype=np.int64))
        has_f = s.forces is not None
        forces.append(s.forces if s.forces is not None else np.zeros((n, 3)))
        fmask.append(np.full(n, has_f))
        volume = abs(float(np.linalg.det(st.cell)))
        is_periodic = bool(np.all(st.pbc)) and volume > 0
        periodic.append(is_periodic)
        has_s = s.stress is not None and is_periodic
        stress.append(s.stress if has_s and s.stress is not None else np.zeros((3, 3)))
        smask.append(has_s)
        cells.append(st.cell)
        energy.append(s.energy if s.energy is not None else 0.0)
        emask.append(s.energy is not None)
        counts.append(n)
        offset += n
    f64 = torch.float64

    def t(a: object, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)

    graph = AtomicGraph(
        positions=t(np.concatenate(pos), f64),
        species=t(np.concatenate(species), torch.int64),
        cell=torch.zeros(3, 3, dtype=f64, device=device),
        pbc=torch.zeros(3, dtype=torch.bool, device=device),
        src=t(np.concatenate(src), torch.int64),
        dst=t(np.concatenate(dst), torch.int64),
        shifts=t(np.concatenate(shifts), torch.int64),
        cutoff=float(samples[0].cutoff),  # type: ignore[arg-type]
    )
    return Batch(
        graph=graph,
        system_idx=t(np.concatenate(sys_idx), torch.int64),
        cells=t(np.stack(cells), f64),
        periodic=t(periodic, torch.bool),
        n_atoms=t(counts, f64),
        energy=t(energy, f64),
        energy_mask=t(emask, torch.bool),
        forces=t(np.concatenate(forces), f64),
        force_mask=t(np.concatenate(fmask), torch.bool),
        stress=t(np.stack(stress), f64),
        stress_mask=t(smask, torch.bool),
    )


@dataclass
class BatchPrediction:
    """Predictions for a :class:`Batch`, float64.

    Shapes:
        energy: ``[n_systems]`` eV
        forces: ``[n_atoms, 3]`` eV/Å, or None
        stress: ``[n_systems, 3, 3]`` eV/Å³ (zeros for non-periodic systems), or None
    """

    energy: torch.Tensor
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None


def predict_batch(
    model: Potential,
    batch: Batch,
    *,
    forces: bool = True,
    stress: bool = False,
    create_graph: bool = False,
) -> BatchPrediction:
    """Per-system energies, per-atom forces and per-system stresses by autograd.

    Geometry (strain, edge vectors) is float64, the body runs in the model's dtype.
    Use ``create_graph=True`` when the forces
    enter a loss that is differentiated with respect to the weights.
    """
    g = batch.graph
    f64 = torch.float64
    positions = g.positions.detach().requires_grad_(forces)
    cells = batch.cells.detach()
    n_sys = batch.n_systems
    strain = None
    if stress:
        strain = torch.zeros(n_sys, 3, 3, dtype=f64, device=cells.device, requires_grad=True)
        deform = torch.eye(3, dtype=f64, device=cells.device) + 0.5 * (
            strain + strain.transpose(1, 2)
        )
        pos_used = torch.einsum("ni,nij->nj", positions, deform.index_select(0, batch.system_idx))
        cells_used = cells @ deform
    else:
        pos_used, cells_used = positions, cells
    edge_cells = cells_used.index_select(0, batch.system_idx.index_select(0, g.dst))
    offsets = torch.einsum("ki,kij->kj", g.shifts.to(f64), edge_cells)
    vec = pos_used.index_select(0, g.src) + offsets - pos_used.index_select(0, g.dst)
    with torch.set_grad_enabled(forces or stress or torch.is_grad_enabled()):
        energies = model.atomic_energies(g, vec, identity_exchange)
    energies = energies.to(f64)
    energy = energies.new_zeros(n_sys).index_add(0, batch.system_idx, energies)
    out = BatchPrediction(energy=energy)
    if forces or stress:
        inputs = [t for t in (positions if forces else None, strain) if t is not None]
        grads = list(
            torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
        )
        if forces:
            gp = grads.pop(0)
            out.forces = -gp if gp is not None else torch.zeros_like(positions)
        if stress:
            assert strain is not None
            gs = grads.pop(0)
            virial = -(gs if gs is not None else torch.zeros_like(strain))
            volume = torch.abs(torch.linalg.det(cells))
            safe = torch.where(batch.periodic, volume, torch.ones_like(volume))
            stress_t = -virial / safe[:, None, None]
            out.stress = torch.where(batch.periodic[:, None, None], stress_t, 0.0)
    if not create_graph:
        out.energy = out.energy.detach()
    return out
