"""Neighbour-list rebuilds of distributed MD in which no rank holds the whole system.

For the spatial partitioners (grid, Low-NN) the partition is kept as
:class:`~atomshard.partition.Regions`, fixed at set-up, so the owner of an atom is a
function of its position. A rebuild then needs only messages between ranks:

1. :func:`migrate`: each rank looks up the region of each of its atoms and sends the
   leavers (id, positions, velocity, mass, species) to their new owners.
2. :func:`build_local_part`: each rank sends every other rank the owned atoms that may
   lie within ``cutoff + skin`` of that rank's region (:meth:`Regions.near`, a
   conservative box test); builds the neighbour list of owned atoms and these ghosts;
   keeps the edges into owned atoms; its halo is the ghosts at their source end (one
   row per atom, images as shifts), grouped by owner then global id; it asks each owner
   for the ids it needs, and the owner's ``send`` lists are those ids' rows.

The result equals :func:`~atomshard.partition.build_halo_plans` on the whole system with
the same ownership (same owned rows, halo rows, ``send``/``recv`` and edges in the same
``(dst, src, shift)`` global order), except ``edge_global``, which here numbers the local
edges (no global edge list exists). Every array is sized by a rank's owned atoms, its
ghosts or its edges; :attr:`LocalBuild.peak_rows` reports the largest per-atom one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from atomshard.comm import Communicator, exchange_rows
from atomshard.errors import AtomshardError
from atomshard.graph import raw_pairs
from atomshard.partition import HaloPlan, Regions
from atomshard.runtime._evaluate import LocalPart


@dataclass
class OwnedAtoms:
    """One rank's atoms, ascending global id (rows of every array aligned).

    Shapes:
        ids: ``[n]`` int64; positions: ``[n, 3]`` Å, those the plans are built on;
        current: ``[n, 3]`` Å or None (the atoms' actual positions when the plans are
        built on others, see ``DistributedForceField.restore``); velocities: ``[n, 3]``;
        masses: ``[n]``; species: ``[n]`` int64
    """

    ids: np.ndarray
    positions: np.ndarray
    current: np.ndarray | None
    velocities: np.ndarray
    masses: np.ndarray
    species: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ids)


def _pack(columns: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Columns ``(array, width)`` side by side as one ``[n, sum(widths)]`` float64 array."""
    n = len(columns[0][0])
    return np.concatenate(
        [np.asarray(c, dtype=np.float64).reshape(n, w) for c, w in columns], axis=1
    )


def migrate(comm: Communicator, regions: Regions, atoms: OwnedAtoms) -> tuple[OwnedAtoms, int]:
    """Send every atom to the owner of its region; returns this rank's atoms and leavers.

    Collective. Owners are looked up on ``atoms.positions``.
    """
    world, me = comm.world_size, comm.rank
    owner = regions.owner(atoms.positions) if atoms.n else np.zeros(0, np.int64)
    has_current = atoms.current is not None
    current = atoms.current if atoms.current is not None else np.zeros((atoms.n, 0))
    packed = _pack(
        [
            (atoms.ids, 1),
            (atoms.positions, 3),
            (current, 3 * has_current),
            (atoms.velocities, 3),
            (atoms.masses, 1),
            (atoms.species, 1),
        ]
    )
    blocks = [torch.as_tensor(packed[owner == q]) for q in range(world)]
    got = exchange_rows(comm, blocks, what="atom migration")
    rows = torch.cat([g.cpu() for g in got]).numpy()
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    c = 4 + 3 * has_current
    out = OwnedAtoms(
        ids=rows[:, 0].astype(np.int64),
        positions=rows[:, 1:4].copy(),
        current=rows[:, 4:7].copy() if has_current else None,
        velocities=rows[:, c : c + 3].copy(),
        masses=rows[:, c + 3].copy(),
        species=rows[:, c + 4].astype(np.int64),
    )
    return out, int((owner != me).sum())


def _edge_order(
    dst: np.ndarray, ids: np.ndarray, src: np.ndarray, shifts: np.ndarray
) -> np.ndarray:
    """Permutation sorting edges by (``dst`` row, global id of ``src``, shift).

    ``dst`` rows are owned rows (ascending id), so this is the global list's order. One
    combined integer key sorts several times faster than a five-column lexsort.
    """
    if len(dst) == 0:
        return np.zeros(0, np.int64)
    n = len(ids)
    id_rank = np.empty(n, np.int64)
    id_rank[np.argsort(ids, kind="stable")] = np.arange(n)
    lo = shifts.min(axis=0)
    span = shifts.max(axis=0) - lo + 1
    if float(n) ** 2 * float(np.prod(span)) >= 2.0**62:
        return np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], ids[src], ids[dst]))
    key = dst * n + id_rank[src]
    for axis in range(3):
        key = key * span[axis] + (shifts[:, axis] - lo[axis])
    return np.argsort(key, kind="stable")


@dataclass
class LocalBuild:
    """A rank's part from :func:`build_local_part` and the size of its largest array."""

    part: LocalPart
    #: rows of the largest per-atom array made (owned atoms, ghosts, or their union)
    peak_rows: int


def build_local_part(
    comm: Communicator,
    regions: Regions,
    ids: np.ndarray,
    positions: np.ndarray,
    species: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    cutoff: float,
    n_global: int,
) -> LocalBuild:
    """This rank's :class:`LocalPart` at ``cutoff``, from its owned atoms only. Collective.

    Args:
        ids, positions, species: the owned atoms, ascending id (after :func:`migrate`).
        n_global: atoms over all ranks (stored in the part; a number, not an array).
    """
    world, me = comm.world_size, comm.rank
    n_own = len(ids)
    # 1. ghosts: owned atoms that may be within the cutoff of another rank's region
    if n_own:
        rows, parts = regions.near(positions, cutoff, exclude=me)
    else:
        rows = parts = np.zeros(0, np.int64)
    packed = _pack([(ids, 1), (positions, 3), (species, 1)])
    blocks = [torch.as_tensor(packed[rows[parts == q]]) for q in range(world)]
    got = exchange_rows(comm, blocks, what="ghost atoms")
    peers = [q for q in range(world) if q != me]
    empty = torch.zeros(0, 5, dtype=torch.float64)
    ghost = torch.cat([empty] + [got[q].cpu() for q in peers]).numpy()
    ghost_owner = np.concatenate(
        [np.zeros(0, np.int64)] + [np.full(len(got[q]), q, np.int64) for q in peers]
    )
    # received per owner in ascending id: ghost rows are ordered by (owner, id)
    all_ids = np.concatenate([ids, ghost[:, 0].astype(np.int64)])
    all_pos = np.concatenate([positions.reshape(-1, 3), ghost[:, 1:4]])
    all_species = np.concatenate([species, ghost[:, 4].astype(np.int64)])
    peak = max(n_own, len(ghost), len(all_ids), len(rows))

    # 2. edges into owned atoms, from the neighbour list of owned atoms and ghosts
    if n_own:
        dst, src, shifts, _ = raw_pairs(all_pos, cell, pbc, cutoff=cutoff)
        keep = np.flatnonzero(dst < n_own)
        src, dst, shifts = src[keep], dst[keep], shifts[keep]
    else:
        src = dst = np.zeros(0, np.int64)
        shifts = np.zeros((0, 3), np.int64)
    halo = np.unique(src[src >= n_own])  # ascending local row = (owner, id) order
    row_of = np.full(len(all_ids), -1, np.int64)
    row_of[:n_own] = np.arange(n_own)
    row_of[halo] = n_own + np.arange(len(halo))
    local_src = row_of[src]
    # the global graph's edge order: (dst id, src id, shift); owned rows are in id order
    order = _edge_order(dst, all_ids, src, shifts)
    local_src, local_dst, shifts = local_src[order], dst[order], shifts[order]

    # 3. halo requests: each owner learns which of its atoms this rank needs, in order
    halo_owner = ghost_owner[halo - n_own]
    halo_ids = all_ids[halo]
    recv: dict[int, np.ndarray] = {}
    requests = []
    for q in range(world):
        sel = np.flatnonzero(halo_owner == q)
        if len(sel):
            recv[q] = n_own + sel
        requests.append(torch.as_tensor(halo_ids[sel].reshape(-1, 1)))
    asked = exchange_rows(comm, requests, what="halo requests")
    send: dict[int, np.ndarray] = {}
    for q in range(world):
        if q == me or len(asked[q]) == 0:
            continue
        want = asked[q].cpu().numpy()[:, 0]
        rows_q = np.searchsorted(ids, want)
        if np.any(rows_q >= n_own) or not np.array_equal(ids[np.minimum(rows_q, n_own - 1)], want):
            raise AtomshardError(
                f"rank {me}: rank {q} asked for atoms this rank does not own (a ghost was "
                f"sent by the wrong rank); ids {want[:5].tolist()}..."
            )
        send[q] = rows_q
    plan = HaloPlan(
        rank=me,
        n_parts=world,
        n_owned=n_own,
        local_to_global=np.concatenate([ids, halo_ids]),
        send=send,
        recv=recv,
        src=local_src,
        dst=local_dst,
        shifts=shifts,
        edge_global=np.arange(len(local_src)),
    )
    part = LocalPart(
        plan=plan,
        positions=np.concatenate([positions.reshape(-1, 3), all_pos[halo]]),
        species=np.concatenate([species, all_species[halo]]),
        cell=np.asarray(cell, dtype=np.float64),
        pbc=np.asarray(pbc, dtype=bool),
        n_atoms=int(n_global),
        cutoff=float(cutoff),
    )
    return LocalBuild(part=part, peak_rows=int(peak))
