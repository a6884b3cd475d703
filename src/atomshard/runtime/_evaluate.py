"""Distributed evaluation of a potential: one frame, every rank, the serial numbers.

Rank 0 holds the structure, builds the neighbour list, the partition and every rank's
halo plan, and scatters to each rank only its plan and the positions/species of its
local (owned + halo) rows. Each rank then runs the unchanged model on its local graph:
positions pass through the halo exchange (so the forces on owned atoms collect the
contributions computed on other ranks in the exchange's backward), features pass
through it before every message-passing layer, and the energy and virial are summed over
ranks. Forces and per-atom energies are gathered to rank 0 in the global atom order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from atomshard.comm import (
    Communicator,
    ExchangeProfiler,
    HaloExchange,
    gather_by_id,
    root_scatter,
)
from atomshard.errors import InputError
from atomshard.graph import AtomicGraph, Structure, neighbor_list
from atomshard.models.base import Potential, Properties, compute_properties, identity_exchange
from atomshard.partition import HaloPlan, build_halo_plans
from atomshard.runtime._deep import evaluate_deep, plan_block_mode
from atomshard.runtime._partition import PartitionSpec, partition_atoms

_Part = TypeVar("_Part", bound="LocalRows")


@dataclass(frozen=True, eq=False)
class LocalRows:
    """The per-rank fields every part type shares: its halo plan and its local rows.

    Shapes:
        positions: ``[n_local, 3]`` float64, Å (owned rows, then halo rows)
        species: ``[n_local]`` int64
        cell: ``[3, 3]`` float64, Å; pbc: ``[3]`` bool
        n_atoms: the global atom count; cutoff: Å
    """

    plan: HaloPlan
    positions: np.ndarray
    species: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    n_atoms: int
    cutoff: float

    @classmethod
    def of(
        cls: type[_Part], structure: Structure, plan: HaloPlan, cutoff: float, **extra: Any
    ) -> _Part:
        """This type's part of ``structure`` under ``plan`` (``extra``: its own fields)."""
        return cls(
            plan=plan,
            positions=structure.positions[plan.local_to_global],
            species=structure.species[plan.local_to_global],
            cell=structure.cell,
            pbc=structure.pbc,
            n_atoms=structure.n_atoms,
            cutoff=float(cutoff),
            **extra,
        )

    def local_graph(
        self, src: np.ndarray, dst: np.ndarray, shifts: np.ndarray, device: torch.device | str
    ) -> AtomicGraph:
        """An :class:`AtomicGraph` of the local rows with the given local edges."""
        rows = Structure(
            positions=self.positions, species=self.species, cell=self.cell, pbc=self.pbc
        )
        return AtomicGraph.from_structure(
            rows, self.cutoff, device=device, edges=(src, dst, shifts)
        )


@dataclass(frozen=True)
class LocalPart(LocalRows):
    """What rank 0 sends each rank for one frame: its plan and its local rows."""

    def graph(self, device: torch.device | str = "cpu") -> AtomicGraph:
        """The local :class:`AtomicGraph` (local row indices, global image shifts)."""
        p = self.plan
        return self.local_graph(p.src, p.dst, p.shifts.reshape(-1, 3), device)


def split_structure(
    structure: Structure,
    cutoff: float,
    n_parts: int,
    partition: PartitionSpec = "auto",
) -> list[LocalPart]:
    """Neighbour list, partition and halo plans of ``structure``: one part per rank."""
    src, dst, shifts = neighbor_list(
        structure.positions, structure.cell, structure.pbc, cutoff=cutoff
    )
    n = structure.n_atoms
    part = partition_atoms(partition, structure, src, dst, shifts, n_parts, cutoff=cutoff)
    plans = build_halo_plans(src, dst, shifts, n, part, n_parts)
    return [LocalPart.of(structure, p, cutoff) for p in plans]


@dataclass
class FrameResult:
    """Global results of one frame (rank 0; ``energy`` and ``stress`` on every rank).

    Shapes:
        energies: ``[n_atoms]`` float64 eV; forces: ``[n_atoms, 3]`` float64 eV/Å
        stress: ``[3, 3]`` float64 eV/Å³ or None; virial: ``[3, 3]`` eV or None
    """

    energy: float
    energies: np.ndarray | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    virial: np.ndarray | None


def frame_result_dict(res: FrameResult) -> dict[str, Any]:
    """ASE-style results of one frame: energy, energies, forces, Voigt stress (xx..xy)."""
    out: dict[str, Any] = {"energy": res.energy, "free_energy": res.energy}
    if res.energies is not None:
        out["energies"] = res.energies
    if res.forces is not None:
        out["forces"] = res.forces
    if res.stress is not None:
        s = res.stress
        out["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    return out


class DistributedEvaluator:
    """Evaluates a potential over the ranks of ``comm`` (serially with a null communicator).

    Args:
        model: the potential (the same weights on every rank).
        comm: the communicator.
        partition: ``"lownn"``, ``"metis"``, ``"grid"``, ``"auto"``, a part vector or a
            callable (see :func:`atomshard.runtime.partition_atoms`); used on rank 0.
        transport: halo-exchange transport (``"auto"``, ``"p2p"``, ``"all_to_all"``).
        profiler: collects exchange and step timings on this rank when given.
        max_atoms: the most atoms a rank evaluates at once (a number or ``"auto"``); when
            some rank's part is larger, :meth:`evaluate` runs every rank block by block
            (:func:`atomshard.runtime.plan_block_mode`). None: no limit.
    """

    def __init__(
        self,
        model: Potential,
        comm: Communicator,
        *,
        partition: PartitionSpec = "auto",
        transport: str = "auto",
        profiler: ExchangeProfiler | None = None,
        max_atoms: int | str | None = None,
    ) -> None:
        self.model = model
        self.max_atoms = max_atoms
        self.comm = comm
        self.partition = partition
        self.transport = transport
        self.profiler = profiler
        # the exchange of the last plan: its index tensors and buffers are reused for as
        # long as the plan is (MD steps between neighbour-list rebuilds, benchmarks)
        self._exchange: tuple[HaloPlan, HaloExchange] | None = None

    def exchange_for(self, plan: HaloPlan) -> HaloExchange:
        """The :class:`HaloExchange` of ``plan``, built once per plan object."""
        if self._exchange is None or self._exchange[0] is not plan:
            ex = HaloExchange(plan, self.comm, transport=self.transport, profiler=self.profiler)
            self._exchange = (plan, ex)
        return self._exchange[1]

    def scatter(self, structure: Structure | None) -> LocalPart:
        """Rank 0 splits ``structure`` (ignored elsewhere); every rank gets its part.

        A failure on rank 0 (unknown element, bad partition) is sent to every rank and
        raised everywhere, so nobody waits for a timeout.
        """
        mine = root_scatter(self.comm, self._split, structure)
        assert isinstance(mine, LocalPart)
        return mine

    def _split(self, structure: Structure | None) -> list[LocalPart]:
        if structure is None:
            raise InputError("rank 0 must hold the structure to evaluate")
        self.model.check_species(torch.as_tensor(structure.species))
        return split_structure(
            structure, float(self.model.cutoff), self.comm.world_size, self.partition
        )

    def evaluate_local(
        self, local: LocalPart, *, forces: bool = True, stress: bool = True
    ) -> Properties:
        """Energy (global), virial/stress (global), owned energies and forces (local)."""
        graph = local.graph(self.comm.device)
        return self.evaluate_graph(
            graph, local.plan, forces=forces, stress=stress and bool(local.pbc.all())
        )

    def evaluate_graph(
        self, graph: AtomicGraph, plan: HaloPlan, *, forces: bool = True, stress: bool = True
    ) -> Properties:
        """Evaluate this rank's local ``graph`` (rows as in ``plan``; edges may be a subset)."""
        ex = self.exchange_for(plan)
        feature_exchange = ex if self.model.needs_feature_exchange else identity_exchange
        if self.profiler is not None:
            self.profiler.start_step()
        props = compute_properties(
            self.model,
            graph,
            forces=forces,
            stress=stress,
            exchange=feature_exchange,
            position_exchange=ex,
            n_owned=plan.n_owned,
            reduce=lambda t: self.comm.all_reduce_sum(t, what="energy/virial sum"),
        )
        if self.profiler is not None:
            self.profiler.end_step()
        return props

    def evaluate(
        self, structure: Structure | None, *, forces: bool = True, stress: bool = True
    ) -> FrameResult:
        """Evaluate one frame; per-atom arrays are assembled on rank 0 only."""
        local = self.scatter(structure)
        mode = None
        if self.max_atoms is not None:
            graph = local.graph(self.comm.device)
            mode = plan_block_mode(
                self.model, self.comm, local.plan, graph, self.max_atoms, transport=self.transport
            )
        if mode is None:
            props = self.evaluate_local(local, forces=forces, stress=stress)
        else:
            props = evaluate_deep(
                self.model,
                mode,
                graph.positions[: local.plan.n_owned],
                graph.cell,
                graph.pbc,
                forces=forces,
                stress=stress and bool(local.pbc.all()),
            )
        plan = local.plan
        rows = {"energies": props.energies.detach().cpu().numpy()}
        if forces and props.forces is not None:
            rows["forces"] = props.forces.detach().cpu().numpy()
        gathered = gather_by_id(self.comm, plan.local_to_global[: plan.n_owned], **rows)
        energies = force_arr = None
        if gathered is not None:  # rank 0: every atom once, in global order
            energies = gathered["energies"].astype(np.float64)
            if forces:
                force_arr = gathered.get("forces", np.zeros((local.n_atoms, 3)))
                force_arr = force_arr.astype(np.float64)
        return FrameResult(
            energy=float(props.energy),
            energies=energies,
            forces=force_arr,
            stress=None if props.stress is None else props.stress.detach().cpu().numpy(),
            virial=None if props.virial is None else props.virial.detach().cpu().numpy(),
        )


def as_structure(atoms: Any, *, name: str = "structure") -> Structure:
    """An :class:`ase.Atoms` or a :class:`Structure` as a validated :class:`Structure`."""
    if isinstance(atoms, Structure):
        return atoms
    return Structure.from_ase(atoms, name=name)


def evaluate_frames(
    comm: Communicator,
    model: Potential,
    frames: list[Any] | None,
    *,
    partition: PartitionSpec = "auto",
    transport: str = "auto",
    forces: bool = True,
    stress: bool = True,
    profile: bool = False,
    on_frame: Callable[[int, FrameResult], None] | None = None,
    max_atoms: int | str | None = None,
) -> dict[str, Any]:
    """Evaluate every frame (held by rank 0) across the ranks of ``comm`` (block by block
    where a rank's part exceeds ``max_atoms``, see :class:`DistributedEvaluator`).

    Returns:
        ``{"frames": [FrameResult, ...] (rank 0; empty elsewhere), "profile": per-rank
        summaries (rank 0, when ``profile``), "seconds": wall time}``.
    """
    n_frames = comm.broadcast_object(len(frames) if frames is not None else 0)
    profiler = ExchangeProfiler() if profile else None
    ev = DistributedEvaluator(
        model,
        comm,
        partition=partition,
        transport=transport,
        profiler=profiler,
        max_atoms=max_atoms,
    )
    results = []
    t0 = time.perf_counter()
    for i in range(n_frames):
        structure = None
        if comm.rank == 0:
            assert frames is not None
            structure = as_structure(frames[i], name=f"frame {i}")
        res = ev.evaluate(structure, forces=forces, stress=stress)
        if comm.rank == 0:
            results.append(res)
            if on_frame is not None:
                on_frame(i, res)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"frames": results, "seconds": seconds}
    if profiler is not None:
        mine = {"rank": comm.rank, **profiler.summary()}
        out["profile"] = comm.gather_objects(mine) if comm.world_size > 1 else [mine]
    return out
