"""A rank's part with its whole receptive field, for block-by-block evaluation on ranks.

The layer-by-layer exchange needs only one shell of halo atoms, but it makes every rank
run each layer over its whole part at once: a rank's part must fit in memory. To evaluate
a part block by block (:mod:`atomshard.runtime.blocks`), a rank instead needs every atom
within ``n_hops`` edges of its owned atoms, and every edge into the atoms within
``n_hops - 1`` edges, the "deep halo". Then no feature exchange is needed at all: the
positions of the deep halo are exchanged once per evaluation, each block is evaluated
locally, and the forces on halo rows go home through the exchange's reverse.

:func:`deepen` grows the deep halo from a rank's ordinary one-shell :class:`HaloPlan` by
messages: hop after hop, each rank asks the owners of its outermost halo atoms for the
edges into them (an owner knows every edge into its atoms). The result is a subgraph of
the global graph, with the global graph's own edges and image shifts, so block evaluation
on it gives the serial numbers. No rank holds arrays sized by the whole system.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from atomshard.comm import Communicator, HaloExchange, exchange_rows
from atomshard.errors import AtomshardError, InputError
from atomshard.graph import AtomicGraph
from atomshard.models.base import Potential, Properties
from atomshard.partition import HaloPlan
from atomshard.runtime.blocks import compute_properties_in_blocks, plan_blocks, resolve_max_atoms

#: columns of an edge reply: dst id, src id, src owner, shift (3)
_EDGE_COLUMNS = 6


@dataclass(frozen=True)
class DeepPart:
    """One rank's deep halo: the plan that exchanges it and the edges among its rows.

    Attributes:
        plan: owned rows, then every atom within ``n_hops`` edges of them grouped by owner
            (ascending id within a group); its send/recv lists exchange positions (and
            send forces home in reverse). It holds no edges: those are below, because edges
            here may point into halo rows.
        src, dst: ``[n_edges]`` int64 local rows of every edge into an atom within
            ``n_hops - 1`` edges of the owned ones (cutoff + skin of the source plan).
        shifts: ``[n_edges, 3]`` int64 image shifts, as in the global graph.
        hops: ``[n_local]`` int64, how many edges each row is from the owned atoms.
    """

    plan: HaloPlan
    src: np.ndarray
    dst: np.ndarray
    shifts: np.ndarray
    hops: np.ndarray

    @property
    def n_local(self) -> int:
        return self.plan.n_local


def _owners(plan: HaloPlan) -> np.ndarray:
    owner = np.full(plan.n_local, plan.rank, dtype=np.int64)
    for peer, rows in plan.recv.items():
        owner[rows] = peer
    return owner


def deepen(comm: Communicator, plan: HaloPlan, n_hops: int) -> DeepPart:
    """This rank's :class:`DeepPart` for a model of ``n_hops`` layers. Collective.

    ``plan`` is the rank's one-shell plan (edges into its owned atoms at the plan's
    cutoff + skin, as every rank's plan of the same build).
    """
    if n_hops < 1:
        raise ValueError(f"n_hops must be >= 1, got {n_hops}")
    world, me = comm.world_size, comm.rank
    gid, owner = plan.local_to_global, _owners(plan)
    n_own = plan.n_owned
    # what this rank knows: edges into its owned atoms, in global ids
    e_dst = [gid[plan.dst]]
    e_src = [gid[plan.src]]
    e_owner = [owner[plan.src]]
    e_shift = [plan.shifts.reshape(-1, 3)]
    hop_of: dict[int, int] = {int(g): 0 for g in gid[:n_own]}
    owner_of: dict[int, int] = {int(g): me for g in gid[:n_own]}
    frontier: list[int] = []
    for g, q in zip(gid[n_own:].tolist(), owner[n_own:].tolist(), strict=True):
        hop_of[g], owner_of[g] = 1, q
        frontier.append(g)
    # the owner's answer: every edge of its plan into an atom it owns
    own_rows = {int(g): r for r, g in enumerate(gid[:n_own].tolist())}
    order = np.argsort(plan.dst, kind="stable")
    by_dst = np.split(order, np.searchsorted(plan.dst[order], np.arange(1, max(n_own, 1))))
    for hop in range(1, n_hops):
        asks = [np.array([g for g in frontier if owner_of[g] == q], np.int64) for q in range(world)]
        asked = exchange_rows(
            comm, [torch.as_tensor(a.reshape(-1, 1)) for a in asks], what="deep-halo requests"
        )
        replies = []
        for q in range(world):
            ids = asked[q].cpu().numpy().reshape(-1) if q != me else np.zeros(0, np.int64)
            rows = []
            for g in ids.tolist():
                r = own_rows.get(int(g))
                if r is None:
                    raise AtomshardError(
                        f"rank {me}: rank {q} asked for the edges into atom {g}, which this "
                        "rank does not own"
                    )
                edges = by_dst[r] if r < len(by_dst) else np.zeros(0, np.int64)
                if len(edges):
                    rows.append(
                        np.column_stack(
                            [
                                np.full(len(edges), g, np.int64),
                                gid[plan.src[edges]],
                                owner[plan.src[edges]],
                                plan.shifts.reshape(-1, 3)[edges],
                            ]
                        )
                    )
            block = np.concatenate(rows) if rows else np.zeros((0, _EDGE_COLUMNS), np.int64)
            replies.append(torch.as_tensor(block.astype(np.int64)))
        got = exchange_rows(comm, replies, what="deep-halo edges")
        frontier = []
        for q in range(world):
            if q == me:
                continue
            block = got[q].cpu().numpy().reshape(-1, _EDGE_COLUMNS)
            e_dst.append(block[:, 0])
            e_src.append(block[:, 1])
            e_owner.append(block[:, 2])
            e_shift.append(block[:, 3:6])
            for g, q_src in zip(block[:, 1].tolist(), block[:, 2].tolist(), strict=True):
                if g not in hop_of:
                    hop_of[g], owner_of[g] = hop + 1, q_src
                    frontier.append(g)
        # an atom is asked for once: every rank's frontier holds only atoms new to it
    return _assemble(comm, plan, hop_of, owner_of, e_dst, e_src, e_shift)


def _assemble(
    comm: Communicator,
    plan: HaloPlan,
    hop_of: dict[int, int],
    owner_of: dict[int, int],
    e_dst: list[np.ndarray],
    e_src: list[np.ndarray],
    e_shift: list[np.ndarray],
) -> DeepPart:
    """Number the rows (owned, then halo by owner and id), and agree on send lists."""
    world, me = comm.world_size, comm.rank
    n_own = plan.n_owned
    owned_ids = plan.local_to_global[:n_own]
    halo = np.array(sorted(g for g in hop_of if owner_of[g] != me), dtype=np.int64)
    halo_owner = np.array([owner_of[int(g)] for g in halo], dtype=np.int64)
    order = np.lexsort((halo, halo_owner))
    halo, halo_owner = halo[order], halo_owner[order]
    local_to_global = np.concatenate([owned_ids, halo])
    recv: dict[int, np.ndarray] = {}
    for q in range(world):
        sel = np.flatnonzero(halo_owner == q)
        if len(sel):
            recv[q] = n_own + sel
    asked = exchange_rows(
        comm,
        [torch.as_tensor(halo[halo_owner == q].reshape(-1, 1)) for q in range(world)],
        what="deep-halo atoms",
    )
    id_order = np.argsort(owned_ids)
    send: dict[int, np.ndarray] = {}
    for q in range(world):
        if q == me or len(asked[q]) == 0:
            continue
        want = asked[q].cpu().numpy().reshape(-1)
        at = np.searchsorted(owned_ids, want, sorter=id_order)
        rows = id_order[np.minimum(at, max(n_own - 1, 0))] if n_own else at
        if not n_own or not np.array_equal(owned_ids[rows], want):
            raise AtomshardError(f"rank {me}: rank {q} asked for deep-halo atoms it does not own")
        send[q] = rows
    # edges: global ids to local rows
    dst_ids, src_ids = np.concatenate(e_dst), np.concatenate(e_src)
    shifts = np.concatenate(e_shift).reshape(-1, 3).astype(np.int64)
    sort = np.argsort(local_to_global, kind="stable")
    to_row = lambda ids: sort[np.searchsorted(local_to_global, ids, sorter=sort)]  # noqa: E731
    src, dst = to_row(src_ids), to_row(dst_ids)
    hops = np.array([hop_of[int(g)] for g in local_to_global], dtype=np.int64)
    exchange_plan = HaloPlan(
        rank=me,
        n_parts=plan.n_parts,
        n_owned=n_own,
        local_to_global=local_to_global,
        send=send,
        recv=recv,
        src=np.zeros(0, np.int64),
        dst=np.zeros(0, np.int64),
        shifts=np.zeros((0, 3), np.int64),
        edge_global=np.zeros(0, np.int64),
    )
    return DeepPart(plan=exchange_plan, src=src, dst=dst, shifts=shifts, hops=hops)


def deep_graph(
    deep: DeepPart,
    exchange: HaloExchange,
    positions: torch.Tensor,
    species: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    cutoff: float,
) -> AtomicGraph:
    """The deep part's graph now: the owned ``positions`` (``[n_owned, 3]``) exchanged to
    the halo rows, the edges shorter than ``cutoff``. ``species``: ``[n_local]``. Collective."""
    f64 = torch.float64
    n_own = deep.plan.n_owned
    local = torch.zeros(deep.n_local, 3, dtype=f64, device=positions.device)
    local[:n_own] = positions.detach().to(f64)
    if exchange.comm.world_size > 1:
        local = exchange.forward_exchange(local)
    src = torch.as_tensor(deep.src, dtype=torch.int64, device=local.device)
    dst = torch.as_tensor(deep.dst, dtype=torch.int64, device=local.device)
    shifts = torch.as_tensor(deep.shifts, dtype=torch.int64, device=local.device)
    cell = cell.to(f64)
    vec = local[src] + shifts.to(f64) @ cell - local[dst]
    keep = (vec * vec).sum(dim=1) < float(cutoff) ** 2
    return AtomicGraph(
        positions=local,
        species=species,
        cell=cell,
        pbc=pbc,
        src=src[keep],
        dst=dst[keep],
        shifts=shifts[keep],
        cutoff=float(cutoff),
    )


@dataclass(frozen=True)
class BlockMode:
    """What a rank needs to evaluate its part block by block until the next rebuild.

    Attributes:
        deep: the deep part; exchange: its position exchange; species: ``[n_local]``;
        part: ``[n_local]`` block of every row (-1: halo rows).
    """

    deep: DeepPart
    exchange: HaloExchange
    species: torch.Tensor
    part: torch.Tensor


def plan_block_mode(
    model: Potential,
    comm: Communicator,
    plan: HaloPlan,
    graph: AtomicGraph,
    max_atoms: int | str,
    *,
    skin: float = 0.0,
    transport: str = "auto",
) -> BlockMode | None:
    """Block mode for this rebuild, or None when every rank's part fits. Collective.

    ``plan`` and ``graph`` are the rank's one-shell plan and its graph (positions of every
    local row, species, cell; edges as built). ``max_atoms``: the most atoms a rank
    evaluates at once, or ``"auto"`` (what the free memory of every rank allows). Blocks
    are planned at ``cutoff + skin``, so they stay within the limit until the next
    rebuild. A rank that cannot split its part makes every rank raise.
    """
    limit = max_atoms
    if isinstance(limit, str):
        mine = resolve_max_atoms(model, limit, graph)
        worst = torch.tensor([-float(mine or 2**62)], dtype=torch.float64)
        limit = int(-comm.all_reduce_max(worst, what="block sizes")[0])
    rows = torch.tensor([float(plan.n_local)], dtype=torch.float64)
    if int(comm.all_reduce_max(rows, what="part sizes")[0]) <= limit:
        return None
    n_hops = model.capabilities().n_hops
    deep = deepen(comm, plan, n_hops)
    exchange = HaloExchange(deep.plan, comm, transport=transport)
    n_own = plan.n_owned
    species = torch.zeros(deep.n_local, 1, dtype=torch.float64)
    species[:n_own, 0] = graph.species[:n_own].to(torch.float64).cpu()
    if comm.world_size > 1:
        species = exchange.forward_exchange(species)
    species = species[:, 0].round().to(torch.int64)
    owned = graph.positions[:n_own]
    wide = deep_graph(
        deep, exchange, owned, species, graph.cell, graph.pbc, float(model.cutoff) + skin
    )
    try:
        part: torch.Tensor | None = plan_blocks(wide, n_hops, max_atoms=int(limit), n_counted=n_own)
        error = ""
    except InputError as exc:
        part, error = None, str(exc)
    failed = torch.tensor([float(bool(error))], dtype=torch.float64)
    if float(comm.all_reduce_max(failed, what="block planning")[0]) > 0:
        raise InputError(error or "another rank cannot split its part into blocks")
    assert part is not None
    return BlockMode(deep=deep, exchange=exchange, species=species, part=part)


def evaluate_deep(
    model: Potential,
    mode: BlockMode,
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    *,
    forces: bool = True,
    stress: bool = True,
) -> Properties:
    """Energy and virial/stress (summed over ranks), owned energies and forces, from a
    block-by-block evaluation of this rank's deep part with the owned ``positions``
    (``[n_owned, 3]``) now. Collective.

    Each block counts only owned atoms, so every atom's energy is counted once over the
    ranks; the forces on halo rows go home through the exchange's reverse and are added
    to their owners'; the virial is a sum over every rank's blocks.
    """
    deep, exchange = mode.deep, mode.exchange
    comm = exchange.comm
    n_own = deep.plan.n_owned
    graph = deep_graph(deep, exchange, positions, mode.species, cell, pbc, model.cutoff)
    props = compute_properties_in_blocks(
        model, graph, forces=forces, stress=stress, part=mode.part, progress=False
    )
    f64 = torch.float64
    sums = torch.zeros(10, dtype=f64, device=graph.device)
    sums[0] = props.energies[:n_own].sum()
    if props.virial is not None:
        sums[1:] = props.virial.reshape(-1)
    if comm.world_size > 1:
        sums = comm.all_reduce_sum(sums, what="energy/virial sum")
    out = Properties(energy=sums[0], energies=props.energies[:n_own])
    if props.forces is not None:
        out.forces = (
            exchange.reverse_exchange(props.forces, rows=n_own)
            if comm.world_size > 1
            else props.forces[:n_own]
        )
    if props.virial is not None:
        out.virial = sums[1:].reshape(3, 3)
        volume = torch.abs(torch.linalg.det(graph.cell))
        if bool(graph.pbc.all()) and float(volume) > 0:
            out.stress = -out.virial / volume
    return out
