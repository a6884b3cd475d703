"""Distributed molecular dynamics: a force field whose state holds only owned atoms.

:class:`DistributedForceField` satisfies :class:`atomshard.md.state.ForceField`, so the
serial integrators (``nve_step``, ``langevin_step``: per-atom arithmetic only) run
unchanged on every rank. Each rank's :class:`~atomshard.md.state.MDState` holds the
positions, velocities, masses, species and global ids of the atoms it owns.

Every step: one position exchange refreshes the halo, local edges beyond the cutoff are
masked (the plan was built at ``cutoff + skin``), and the model runs as in
:class:`~atomshard.runtime.DistributedEvaluator`. When any atom has moved more than half
the skin since the last build (the serial :class:`~atomshard.graph.NeighborList`
criterion, reduced over ranks), the plan is rebuilt and atoms migrate with their
velocities to their new owners.

Two rebuild paths:

* **local** (grid and Low-NN partitions, the default for them): the partitioner runs once,
  at set-up, on rank 0; its :class:`~atomshard.partition.Regions` are broadcast and
  every later rebuild is done by messages between ranks
  (:func:`atomshard.runtime.build_local_part`, :func:`~atomshard.runtime.migrate`): no
  rank holds arrays sized by the whole system.
* **gather** (METIS, a callable or explicit partition, or ``rebuild="gather"``): owned
  atoms are gathered on rank 0, re-partitioned, and plans and atoms are scattered.

With ``max_atoms`` (``--block-atoms N``) and a rank whose part (owned + halo) exceeds it,
every rank grows its part to the model's whole receptive field
(:func:`atomshard.runtime.deepen`) at each rebuild and evaluates it block by block
(:func:`atomshard.runtime.evaluate_deep`): one position exchange per step, no feature
exchange, the same numbers.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from atomshard.comm import (
    Communicator,
    ExchangeProfiler,
    gather_by_id,
    root_call,
    root_scatter,
)
from atomshard.errors import InputError
from atomshard.graph import AtomicGraph, Structure, neighbor_list, skin_exceeded
from atomshard.md.state import MDState
from atomshard.models.base import Potential
from atomshard.partition import REGION_PARTITIONERS, PartitionWarning, Regions
from atomshard.runtime import (
    BlockMode,
    DistributedEvaluator,
    LocalPart,
    OwnedAtoms,
    PartitionSpec,
    build_local_part,
    evaluate_deep,
    migrate,
    plan_block_mode,
    split_structure,
)

#: ``rebuild=`` values of :class:`DistributedForceField`.
REBUILD_MODES = ("auto", "local", "gather")


@dataclass(frozen=True)
class _Owned:
    """Per-atom data that migrates with an atom at a rebuild."""

    velocities: np.ndarray
    masses: np.ndarray
    #: current positions when the plan was built from other (reference) positions
    positions: np.ndarray | None = None


@dataclass
class DistributedMDState(MDState):
    """An :class:`MDState` holding one rank's owned atoms whose global quantities are global.

    ``kinetic_energy()`` and ``n_dof()`` (hence ``temperature()``, ``pressure_gpa()`` and
    the Nosé–Hoover chain forces) are summed over the ranks of ``comm``, so the serial
    integrators need no change. Every rank must call them the same number of times.
    """

    comm: Any = field(default=None, repr=False)
    #: atoms over all ranks; set by :class:`DistributedForceField` at every rebuild
    n_global: int | None = None

    def kinetic_energy(self) -> float:
        local = torch.tensor([super().kinetic_energy()], dtype=torch.float64)
        if self.comm is None or self.comm.world_size == 1:
            return float(local[0])
        return float(self.comm.all_reduce_sum(local, what="kinetic energy")[0])

    def sum_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        if self.comm is None or self.comm.world_size == 1:
            return values
        mine = values.detach().cpu().clone()
        return self.comm.all_reduce_sum(mine, what="global sum").to(values)

    def max_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        if self.comm is None or self.comm.world_size == 1:
            return values
        mine = values.detach().cpu().clone()
        return self.comm.all_reduce_max(mine, what="global maximum").to(values)

    def n_dof(self) -> int:
        if self.n_global is not None:
            return 3 * self.n_global
        local = torch.tensor([float(self.n_atoms)], dtype=torch.float64)
        if self.comm is None or self.comm.world_size == 1:
            return 3 * self.n_atoms
        return 3 * int(self.comm.all_reduce_sum(local, what="atom count")[0])


def distributed_state(state: MDState | None, comm: Communicator) -> DistributedMDState:
    """Rank 0's full ``state`` (None elsewhere) as every rank's :class:`DistributedMDState`.

    Before the first force call rank 0 owns every atom and the others none; that call
    distributes them.
    """
    base = state if state is not None else empty_state()
    fields = {name: getattr(base, name) for name in MDState.__dataclass_fields__}
    return DistributedMDState(**fields, comm=comm)


def empty_state(like: MDState | None = None) -> MDState:
    """A state owning no atoms (ranks other than 0 before the first force call)."""
    f64 = torch.float64
    return MDState(
        positions=torch.zeros(0, 3, dtype=f64),
        velocities=torch.zeros(0, 3, dtype=f64),
        masses=torch.zeros(0, dtype=f64),
        species=torch.zeros(0, dtype=torch.int64),
        atom_ids=torch.zeros(0, dtype=torch.int64),
        cell=torch.zeros(3, 3, dtype=f64) if like is None else like.cell.clone(),
        pbc=torch.zeros(3, dtype=torch.bool) if like is None else like.pbc.clone(),
        forces=torch.zeros(0, 3, dtype=f64),
    )


def _whole_system(gathered: dict[str, np.ndarray], *names: str) -> tuple[np.ndarray, ...]:
    """The named arrays of :func:`~atomshard.comm.gather_by_id`, checking the ids are 0..n-1."""
    ids = gathered["ids"]
    if not np.array_equal(ids, np.arange(len(ids))):
        raise InputError("distributed MD: atom ids must be 0..n_atoms-1, each once")
    return tuple(gathered[name] for name in names)


class DistributedForceField:
    """Fills ``forces`` (owned atoms), ``energy`` and ``stress`` (global) of a rank's state.

    Args:
        model: the potential (same weights on every rank).
        comm: the communicator.
        skin: neighbour-list skin, Å (plans are rebuilt when an atom moved > skin/2).
        partition: how rank 0 assigns atoms: once at set-up for local rebuilds (grid,
            Low-NN), at every rebuild for gather rebuilds.
        transport: halo-exchange transport.
        stress: compute the stress (periodic cells only).
        profiler: per-rank exchange timings.
        rebuild: ``"auto"`` (local rebuilds when the partition is ``grid``, ``lownn``,
            or ``auto`` choosing one of them; else gather), ``"local"`` (the same, but an
            error for a partition without regions) or ``"gather"`` (always gather on
            rank 0 and re-partition).
        max_atoms: the most atoms (owned + halo) one rank evaluates at once
            (``--block-atoms N`` of a distributed run): when a rebuild gives some rank a
            larger part, every rank evaluates its part block by block, each block with its
            halo within ``max_atoms`` (module docstring). ``"auto"``: the limit the memory
            free on every rank allows (:func:`atomshard.runtime.resolve_max_atoms`).
            None: no limit.
    """

    def __init__(
        self,
        model: Potential,
        comm: Communicator,
        *,
        skin: float = 1.0,
        partition: PartitionSpec = "auto",
        transport: str = "auto",
        stress: bool = True,
        profiler: ExchangeProfiler | None = None,
        rebuild: str = "auto",
        max_atoms: int | str | None = None,
    ) -> None:
        if skin < 0:
            raise InputError(f"neighbour-list skin must be >= 0, got {skin}")
        if rebuild not in REBUILD_MODES:
            raise InputError(f"rebuild must be one of {', '.join(REBUILD_MODES)}, got {rebuild!r}")
        spatial = isinstance(partition, str) and partition.lower() in ("auto", *REGION_PARTITIONERS)
        if rebuild == "local" and not spatial:
            shown = partition if isinstance(partition, str) else type(partition).__name__
            raise InputError(
                f"local rebuilds need a spatial partition (grid, lownn or auto), got {shown!r}"
            )
        self.rebuild = rebuild
        self.max_atoms = max_atoms
        #: block mode (see ``max_atoms``) until the next rebuild, or None
        self.deep: BlockMode | None = None
        #: the set-up partition's regions (local rebuilds); None: gather path or not set up
        self.regions: Regions | None = None
        self._setup_done = False
        #: rows of the largest per-atom array of a local rebuild after set-up, over the run
        self.peak_rows = 0
        #: fewest atoms this rank owned after any rebuild
        self.min_owned: int | None = None
        self.model = model
        self.comm = comm
        self.skin = float(skin)
        self.stress = stress
        self.evaluator = DistributedEvaluator(
            model, comm, partition=partition, transport=transport, profiler=profiler
        )
        self.local: LocalPart | None = None
        self._ref_positions: torch.Tensor | None = None
        self._ref_cell: torch.Tensor | None = None
        self.n_builds = 0
        #: atoms that changed owner at rebuilds (on rank 0; on every rank for local rebuilds)
        self.n_migrated = 0

    # -- rebuild and migration ------------------------------------------------------------
    def _needs_rebuild(self, state: MDState) -> bool:
        if self.local is None or self._ref_positions is None or self._ref_cell is None:
            return True
        flag = torch.zeros(1, dtype=torch.float64)
        flag[0] = float(
            skin_exceeded(
                state.positions.detach().cpu().numpy(),
                self._ref_positions.cpu().numpy(),
                state.cell.cpu().numpy(),
                self._ref_cell.cpu().numpy(),
                cutoff=float(self.model.cutoff),
                skin=self.skin,
            )
        )
        return bool(self.comm.all_reduce_max(flag, what="neighbour-list rebuild check")[0] > 0)

    def restore(
        self,
        state: MDState,
        reference: torch.Tensor | None,
        regions: dict[str, Any] | None = None,
    ) -> None:
        """Rebuild the plans of a resumed run from the positions of its last rebuild.

        ``reference`` (rows aligned with ``state.atom_ids``, from a restart file) are the
        positions the interrupted run last partitioned and built its plans on. Building on
        them again gives the same partition, plans and edge order, and the same rebuild
        decisions afterwards, so a resumed run continues bit-identically. ``regions``
        (:meth:`Regions.to_dict`, from the same file; rank 0's copy is used) are the
        set-up regions of a local-rebuild run; they are reused when they are for this
        number of ranks, this cell and this partitioner. Collective.
        """
        if regions is not None and self.comm.rank == 0 and self.rebuild != "gather":
            stored = Regions.from_dict(regions)
            name = self.evaluator.partition
            usable = (
                stored.n_parts == self.comm.world_size
                and np.array_equal(stored.cell, state.cell.cpu().numpy())
                and isinstance(name, str)
                and name.lower() in ("auto", stored.kind)
            )
            regions = regions if usable else None
        if self.comm.world_size > 1:  # rank 0 decides (the others hold no atoms yet)
            regions = self.comm.broadcast_object(regions)
        if regions is not None and self.rebuild != "gather":
            self.regions = Regions.from_dict(regions)
            self._setup_done = True
        self.rebuild_plans(state, reference=reference)

    @property
    def regions_dict(self) -> dict[str, Any] | None:
        """The regions of a local-rebuild run as plain data (for restart files), or None."""
        return None if self.regions is None else self.regions.to_dict()

    def rebuild_plans(self, state: MDState, reference: torch.Tensor | None = None) -> None:
        """Re-partition and rebuild the plans now; atoms migrate to their new owners.

        A force call does this by itself when the skin test asks for it; call it directly
        to time rebuilds or to redistribute atoms. Collective.

        With ``reference``, plans are built on those positions and the current ones
        travel with their atoms (see :meth:`restore`).
        """
        cell = state.cell.cpu().numpy()
        if (
            self.regions is not None
            and self._ref_cell is not None  # set on every rank by the previous build
            and not np.array_equal(self.regions.cell, cell)
        ):
            if bool(state.pbc.all()):
                # the boxes are in fractional coordinates: they follow a barostat's cell
                self.regions = dataclasses.replace(self.regions, cell=cell.copy())
            else:
                self.regions, self._setup_done = None, False  # set up again
        if not self._setup_done:
            self._setup(state, reference)
        if self.regions is not None:
            self._rebuild_local(state, reference)
        else:
            self._rebuild_gather(state, reference)
        self.deep = None
        if self.max_atoms is not None:
            self._plan_blocks(state)

    def _plan_blocks(self, state: MDState) -> None:
        """Block mode when any rank's part exceeds ``max_atoms``. Collective."""
        assert self.local is not None and self.max_atoms is not None
        self.deep = plan_block_mode(
            self.model,
            self.comm,
            self.local.plan,
            self.local.graph(self.comm.device),
            self.max_atoms,
            skin=self.skin,
            transport=self.evaluator.transport,
        )

    def _setup(self, state: MDState, reference: torch.Tensor | None) -> None:
        """Decide the rebuild path; for a local one, rank 0 computes the regions.

        Set-up gathers ids, positions and species on rank 0 (at the start of a run rank 0
        holds every atom anyway) and broadcasts the regions. Collective.
        """
        self._setup_done = True
        spec = self.evaluator.partition
        name = spec.lower() if isinstance(spec, str) else None
        if self.rebuild == "gather" or self.comm.world_size == 1:
            self.regions = None
            return
        if name not in ("auto", *REGION_PARTITIONERS):
            self.regions = None
            return
        positions = state.positions if reference is None else reference
        gathered = gather_by_id(
            self.comm,
            state.atom_ids.cpu().numpy(),
            positions=positions.detach().cpu().numpy(),
            species=state.species.cpu().numpy(),
        )
        result = root_call(self.comm, self._regions_on_root, gathered, state, name)
        self.regions = None if result is None else Regions.from_dict(result)
        if self.regions is None and self.rebuild == "local":
            raise InputError("local rebuilds: partition 'auto' chose METIS, which has no regions")

    def _regions_on_root(
        self, gathered: dict[str, np.ndarray], state: MDState, name: str | None
    ) -> dict[str, Any] | None:
        from atomshard.partition import as_partition_input, compare

        positions, species = _whole_system(gathered, "positions", "species")
        self.model.check_species(torch.as_tensor(species))
        cell, pbc = state.cell.cpu().numpy(), state.pbc.cpu().numpy()
        cutoff = float(self.model.cutoff) + self.skin
        src, dst, shifts = neighbor_list(positions, cell, pbc, cutoff=cutoff)
        graph = as_partition_input(
            {
                "positions": positions,
                "cell": cell,
                "pbc": pbc,
                "src": src,
                "dst": dst,
                "shifts": shifts,
                "cutoff": cutoff,
            }
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PartitionWarning)  # empty ranks are allowed
            if name == "auto":
                results = compare(graph, self.comm.world_size, methods=("auto",))
                name = str(results["auto"][1].method).split(":")[-1]
            if name not in REGION_PARTITIONERS:
                return None
            _, regions = REGION_PARTITIONERS[name](graph, self.comm.world_size)
        return regions.to_dict()

    def _rebuild_local(self, state: MDState, reference: torch.Tensor | None) -> None:
        """Migrate atoms to their regions' owners and build plans by messages. Collective."""
        assert self.regions is not None
        current = state.positions.detach().cpu().numpy()
        atoms = OwnedAtoms(
            ids=state.atom_ids.cpu().numpy(),
            positions=current if reference is None else reference.detach().cpu().numpy(),
            current=None if reference is None else current,
            velocities=state.velocities.cpu().numpy(),
            masses=state.masses.cpu().numpy(),
            species=state.species.cpu().numpy(),
        )
        first = self.n_builds == 0
        atoms, n_left = migrate(self.comm, self.regions, atoms)
        counts = torch.tensor([float(atoms.n), float(n_left)], dtype=torch.float64)
        counts = self.comm.all_reduce_sum(counts, what="atom and migration counts")
        n_global = int(counts[0])
        if not first:  # the first build distributes rank 0's atoms: not a migration
            self.n_migrated += int(counts[1])
        cell, pbc = self.regions.cell, self.regions.pbc  # ranks without atoms know no cell
        built = build_local_part(
            self.comm,
            self.regions,
            atoms.ids,
            atoms.positions,
            atoms.species,
            cell,
            pbc,
            float(self.model.cutoff) + self.skin,
            n_global,
        )
        if not first:
            self.peak_rows = max(self.peak_rows, built.peak_rows)
        owned = _Owned(velocities=atoms.velocities, masses=atoms.masses, positions=atoms.current)
        self._install(state, built.part, owned)

    def _rebuild_gather(self, state: MDState, reference: torch.Tensor | None = None) -> None:
        """Gather owned atoms on rank 0, re-partition, scatter: atoms migrate.

        With ``reference``, plans are built on those positions and the current ones
        travel with their atoms (see :meth:`restore`).
        """
        current = state.positions.detach().cpu().numpy()
        rows = {
            "positions": current if reference is None else reference.detach().cpu().numpy(),
            "velocities": state.velocities.cpu().numpy(),
            "masses": state.masses.cpu().numpy(),
            "species": state.species.cpu().numpy(),
            "owner": np.full(state.n_atoms, self.comm.rank, dtype=np.int64),
        }
        if reference is not None:
            rows["current"] = current
        gathered = gather_by_id(self.comm, state.atom_ids.cpu().numpy(), **rows)
        got = root_scatter(self.comm, self._split, gathered, state)
        local, owned = got
        self._install(state, local, owned)

    def _install(self, state: MDState, local: LocalPart, owned: _Owned) -> None:
        """Make ``local`` this rank's part and its owned atoms the state's rows."""
        plan = local.plan
        n = plan.n_owned
        f64 = torch.float64
        state.positions = torch.as_tensor(local.positions[:n], dtype=f64).clone()
        ref_positions = state.positions.clone()
        if owned.positions is not None:
            state.positions = torch.as_tensor(owned.positions, dtype=f64).clone()
        state.velocities = torch.as_tensor(owned.velocities, dtype=f64).clone()
        state.masses = torch.as_tensor(owned.masses, dtype=f64).clone()
        state.species = torch.as_tensor(local.species[:n], dtype=torch.int64).clone()
        state.atom_ids = torch.as_tensor(plan.local_to_global[:n], dtype=torch.int64).clone()
        state.cell = torch.as_tensor(local.cell, dtype=f64).clone()
        state.pbc = torch.as_tensor(local.pbc, dtype=torch.bool).clone()
        state.forces = torch.zeros(n, 3, dtype=f64)
        if isinstance(state, DistributedMDState):
            state.n_global = local.n_atoms
        self.local = local
        self._ref_positions = ref_positions
        self._ref_cell = state.cell.clone()
        self.n_builds += 1
        self.min_owned = n if self.min_owned is None else min(self.min_owned, n)

    def _split(self, gathered: dict[str, np.ndarray], state: MDState) -> list[Any]:
        positions, species, velocities, masses, old_owner = _whole_system(
            gathered, "positions", "species", "velocities", "masses", "owner"
        )
        n_atoms = len(positions)
        structure = Structure(
            positions=positions,
            species=species,
            cell=state.cell.cpu().numpy(),
            pbc=state.pbc.cpu().numpy(),
        )
        current = gathered.get("current")
        self.model.check_species(torch.as_tensor(structure.species))
        parts = split_structure(
            structure,
            float(self.model.cutoff) + self.skin,
            self.comm.world_size,
            self.evaluator.partition,
        )
        owner_of = np.empty(n_atoms, np.int64)
        for r, p in enumerate(parts):
            owner_of[p.plan.local_to_global[: p.plan.n_owned]] = r
        if self.n_builds:  # the first build distributes rank 0's atoms: not a migration
            self.n_migrated += int((owner_of != old_owner).sum())
        return [
            (
                p,
                _Owned(
                    velocities=velocities[p.plan.local_to_global[: p.plan.n_owned]],
                    masses=masses[p.plan.local_to_global[: p.plan.n_owned]],
                    positions=(
                        None
                        if current is None
                        else current[p.plan.local_to_global[: p.plan.n_owned]]
                    ),
                ),
            )
            for p in parts
        ]

    # -- one force call ---------------------------------------------------------------------
    def __call__(self, state: MDState) -> None:
        if self._needs_rebuild(state):
            self.rebuild_plans(state)
        if self.deep is not None:
            self._call_in_blocks(state)
            return
        assert self.local is not None
        local, plan = self.local, self.local.plan
        ex = self.evaluator.exchange_for(plan)
        cell = state.cell.to(torch.float64)
        positions = torch.empty(plan.n_local, 3, dtype=torch.float64)
        positions[: plan.n_owned] = state.positions.detach()
        positions = ex.forward_exchange(positions) if self.comm.world_size > 1 else positions
        src = torch.as_tensor(plan.src, dtype=torch.int64)
        dst = torch.as_tensor(plan.dst, dtype=torch.int64)
        shifts = torch.as_tensor(plan.shifts.reshape(-1, 3), dtype=torch.int64)
        vec = positions[src] + shifts.to(torch.float64) @ cell - positions[dst]
        keep = (vec * vec).sum(dim=1) < float(self.model.cutoff) ** 2
        graph = AtomicGraph(
            positions=positions,
            species=torch.as_tensor(local.species, dtype=torch.int64),
            cell=cell,
            pbc=state.pbc,
            src=src[keep],
            dst=dst[keep],
            shifts=shifts[keep],
            cutoff=float(self.model.cutoff),
        )
        props = self.evaluator.evaluate_graph(
            graph, plan, forces=True, stress=self.stress and bool(state.pbc.all())
        )
        assert props.forces is not None
        state.forces = props.forces.detach().to(torch.float64)
        state.energy = float(props.energy)
        state.stress = None if props.stress is None else props.stress.detach()

    def _call_in_blocks(self, state: MDState) -> None:
        assert self.deep is not None
        props = evaluate_deep(
            self.model,
            self.deep,
            state.positions,
            state.cell,
            state.pbc,
            stress=self.stress and bool(state.pbc.all()),
        )
        assert props.forces is not None
        state.forces = props.forces.detach().to(torch.float64)
        state.energy = float(props.energy)
        state.stress = None if props.stress is None else props.stress.detach()

    # -- output ---------------------------------------------------------------------------
    @property
    def reference_positions(self) -> torch.Tensor | None:
        """Positions of the owned atoms at the last rebuild (rows as ``state.atom_ids``)."""
        return self._ref_positions
