"""Halo plans: what one part owns, which remote rows it needs, and who sends them.

A partition vector ``part[n_atoms]`` assigns every atom to a part (a rank). Under
incoming-edge ownership a part owns its atoms and every edge whose ``dst`` it owns; its
**halo** is the set of remote atoms that are the ``src`` of an owned edge, one row per
remote atom however many periodic images of it are neighbours.

Local row layout of one part (``HaloPlan.local_to_global``)::

    [ owned atoms, ascending global id | halo from peer q0 | halo from peer q1 | ... ]
      rows 0 .. n_owned-1                 q0 < q1 < ..., ascending global id in a group

``recv[q]`` is the contiguous range of halo rows filled from peer ``q``; ``send[q]`` the
owned rows peer ``q`` needs, in exactly the order of ``q``'s ``recv[rank]``. Both are
produced together from one sorted list of (receiver, owner, atom) triples, so what A
sends B is what B expects, by construction. Only non-empty entries appear in ``send``
and ``recv``. Plans are plain numpy data: no torch, no torch.distributed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atomshard.errors import AtomshardError, InputError
from atomshard.partition._pairs import DENSE_LIMIT, unique_pairs

#: Version of :meth:`HaloPlan.to_dict` / :meth:`HaloPlan.save`; bump on any change.
PLAN_FORMAT = "atomshard.halo_plan"
PLAN_VERSION = 1


class PlanError(AtomshardError):
    """A set of halo plans that violates the ownership/halo contract (see :func:`check_plans`)."""


def _int_array(value: Any, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0:  # [] parses as float64; an empty list of rows as shape (0,)
        arr = np.zeros((0, 3) if ndim == 2 else (0,), dtype=np.int64)
    if arr.ndim != ndim or (ndim == 2 and arr.shape[1] != 3):
        want = "[k]" if ndim == 1 else "[k, 3]"
        raise InputError(f"halo plan field {name!r} must have shape {want}, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"halo plan field {name!r} must hold integers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class HaloPlan:
    """Ownership, halo and exchange lists of one part.

    Shapes:
        local_to_global: ``[n_local]`` int64, owned rows then halo rows (module docstring)
        send: peer -> ``[k]`` int64 local owned rows, in the order of the peer's ``recv``
        recv: peer -> ``[k]`` int64 local halo rows, one contiguous ascending range
        src, dst: ``[n_local_edges]`` int64 local rows; ``dst < n_owned``
        shifts: ``[n_local_edges, 3]`` int64, image shifts as in the global graph
        edge_global: ``[n_local_edges]`` int64, ascending index into the global edge list
    """

    rank: int
    n_parts: int
    n_owned: int
    local_to_global: np.ndarray
    send: dict[int, np.ndarray]
    recv: dict[int, np.ndarray]
    src: np.ndarray
    dst: np.ndarray
    shifts: np.ndarray
    edge_global: np.ndarray

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "rank", int(self.rank))
        set_(self, "n_parts", int(self.n_parts))
        set_(self, "n_owned", int(self.n_owned))
        for name in ("local_to_global", "src", "dst", "edge_global"):
            set_(self, name, _int_array(getattr(self, name), name, 1))
        set_(self, "shifts", _int_array(self.shifts, "shifts", 2))
        for name in ("send", "recv"):
            table = {
                int(k): _int_array(v, f"{name}[{k}]", 1) for k, v in getattr(self, name).items()
            }
            set_(self, name, dict(sorted(table.items())))
        self._check_shapes()

    def _check_shapes(self) -> None:
        def bad(msg: str) -> InputError:
            return InputError(f"halo plan of rank {self.rank}: {msg}")

        if not 0 <= self.rank < self.n_parts:
            raise bad(f"rank must be in [0, n_parts={self.n_parts}), got {self.rank}")
        if not 0 <= self.n_owned <= self.n_local:
            raise bad(f"n_owned={self.n_owned} outside [0, n_local={self.n_local}]")
        n_e = len(self.src)
        if not (len(self.dst) == len(self.shifts) == len(self.edge_global) == n_e):
            raise bad("src, dst, shifts and edge_global must have the same length")
        if n_e and (self.src.min() < 0 or self.src.max() >= self.n_local):
            raise bad(f"src rows must be in [0, n_local={self.n_local})")
        if n_e and (self.dst.min() < 0 or self.dst.max() >= self.n_owned):
            raise bad(f"dst rows must be owned rows, in [0, n_owned={self.n_owned})")
        for peer, rows in self.send.items():
            if not 0 <= peer < self.n_parts or peer == self.rank:
                raise bad(f"send peer {peer} is not another part in [0, {self.n_parts})")
            if len(rows) and (rows.min() < 0 or rows.max() >= self.n_owned):
                raise bad(f"send[{peer}] rows must be owned rows, in [0, {self.n_owned})")
        start = self.n_owned
        for peer, rows in self.recv.items():
            if not 0 <= peer < self.n_parts or peer == self.rank:
                raise bad(f"recv peer {peer} is not another part in [0, {self.n_parts})")
            if not np.array_equal(rows, np.arange(start, start + len(rows))):
                raise bad(f"recv[{peer}] must be the contiguous halo rows from {start}")
            start += len(rows)
        if start != self.n_local:
            raise bad(f"recv ranges cover halo rows up to {start}, but n_local={self.n_local}")

    @property
    def n_local(self) -> int:
        """Owned plus halo rows."""
        return len(self.local_to_global)

    @property
    def n_halo(self) -> int:
        """Halo rows (remote atoms, one row each)."""
        return self.n_local - self.n_owned

    @property
    def n_local_edges(self) -> int:
        return len(self.src)

    @property
    def peers(self) -> list[int]:
        """Sorted parts this part sends to or receives from."""
        return sorted(set(self.send) | set(self.recv))

    @property
    def owned_global(self) -> np.ndarray:
        """``[n_owned]`` int64 global ids of the owned atoms (ascending)."""
        return self.local_to_global[: self.n_owned]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (ints and lists; peer keys as decimal strings).

        Schema (version 1)::

            {"format": "atomshard.halo_plan", "version": 1,
             "rank": int, "n_parts": int, "n_owned": int,
             "local_to_global": [int], "send": {"<peer>": [int]}, "recv": {"<peer>": [int]},
             "src": [int], "dst": [int], "shifts": [[int, int, int]], "edge_global": [int]}
        """
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "rank": self.rank,
            "n_parts": self.n_parts,
            "n_owned": self.n_owned,
            "local_to_global": self.local_to_global.tolist(),
            "send": {str(k): v.tolist() for k, v in self.send.items()},
            "recv": {str(k): v.tolist() for k, v in self.recv.items()},
            "src": self.src.tolist(),
            "dst": self.dst.tolist(),
            "shifts": self.shifts.tolist(),
            "edge_global": self.edge_global.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HaloPlan:
        """Inverse of :meth:`to_dict`; raises :class:`InputError` naming a bad field."""
        if data.get("format") != PLAN_FORMAT:
            raise InputError(f"not a halo plan: format is {data.get('format')!r}")
        if data.get("version") != PLAN_VERSION:
            raise InputError(
                f"halo plan version {data.get('version')!r} is not supported "
                f"(this atomshard reads version {PLAN_VERSION})"
            )
        try:
            return cls(
                rank=data["rank"],
                n_parts=data["n_parts"],
                n_owned=data["n_owned"],
                local_to_global=data["local_to_global"],
                send={int(k): v for k, v in data["send"].items()},
                recv={int(k): v for k, v in data["recv"].items()},
                src=data["src"],
                dst=data["dst"],
                shifts=np.asarray(data["shifts"], dtype=np.int64).reshape(-1, 3),
                edge_global=data["edge_global"],
            )
        except KeyError as exc:
            raise InputError(f"halo plan is missing field {exc.args[0]!r}") from None

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` (no pickles); ``send``/``recv`` as peers + offsets + rows."""
        from atomshard.utils.files import atomic_write

        arrays: dict[str, np.ndarray] = {
            "header": np.array(
                [PLAN_VERSION, self.rank, self.n_parts, self.n_owned], dtype=np.int64
            ),
            "local_to_global": self.local_to_global,
            "src": self.src,
            "dst": self.dst,
            "shifts": self.shifts,
            "edge_global": self.edge_global,
        }
        for name in ("send", "recv"):
            table: dict[int, np.ndarray] = getattr(self, name)
            lengths = [len(v) for v in table.values()]
            arrays[f"{name}_peers"] = np.array(list(table), dtype=np.int64)
            arrays[f"{name}_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            arrays[f"{name}_rows"] = (
                np.concatenate(list(table.values())) if table else np.zeros(0, np.int64)
            )
        with atomic_write(path, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> HaloPlan:
        """Read a plan written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"could not read halo plan {str(path)!r}: {exc}") from exc
        try:
            version, rank, n_parts, n_owned = (int(x) for x in data["header"])
        except (KeyError, ValueError):
            raise InputError(f"{str(path)!r} is not an atomshard halo plan") from None
        if version != PLAN_VERSION:
            raise InputError(f"halo plan {str(path)!r} has version {version}, need {PLAN_VERSION}")
        tables: dict[str, dict[int, np.ndarray]] = {}
        for name in ("send", "recv"):
            peers, offsets, rows = (data[f"{name}_{k}"] for k in ("peers", "offsets", "rows"))
            tables[name] = {int(p): rows[offsets[i] : offsets[i + 1]] for i, p in enumerate(peers)}
        return cls(
            rank=rank,
            n_parts=n_parts,
            n_owned=n_owned,
            local_to_global=data["local_to_global"],
            send=tables["send"],
            recv=tables["recv"],
            src=data["src"],
            dst=data["dst"],
            shifts=data["shifts"],
            edge_global=data["edge_global"],
        )


def _check_edges(
    src: np.ndarray, dst: np.ndarray, shifts: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edge list as int64 arrays (zero shifts for ``None``), or :class:`InputError`."""
    src = np.asarray(src, dtype=np.int64).reshape(-1)
    dst = np.asarray(dst, dtype=np.int64).reshape(-1)
    if len(src) != len(dst):
        raise InputError(f"src and dst differ in length ({len(src)} vs {len(dst)})")
    shifts = (
        np.zeros((len(src), 3), np.int64)
        if shifts is None
        else np.asarray(shifts, dtype=np.int64).reshape(-1, 3)
    )
    if len(shifts) != len(src):
        raise InputError(f"shifts has {len(shifts)} rows for {len(src)} edges")
    return src, dst, shifts


def _check_part(part: np.ndarray, n_atoms: int, n_parts: int) -> np.ndarray:
    """The partition vector as int64 with every entry in ``[0, n_parts)``."""
    part = np.asarray(part)
    if part.shape != (n_atoms,) or not np.issubdtype(part.dtype, np.integer):
        raise InputError(
            f"part must be an integer array of shape ({n_atoms},), got {part.dtype} {part.shape}"
        )
    part = part.astype(np.int64, copy=False)
    if n_atoms and (part.min() < 0 or part.max() >= n_parts):
        bad = int(np.flatnonzero((part < 0) | (part >= n_parts))[0])
        raise InputError(f"part[{bad}] = {part[bad]} is outside [0, {n_parts})")
    return part


def _small_int(values: np.ndarray, bound: int) -> np.ndarray:
    """``values`` (all < ``bound``) as int16 if they fit: a stable sort is then a radix sort."""
    return values.astype(np.int16) if bound <= np.iinfo(np.int16).max else values


def build_halo_plans(
    src: np.ndarray,
    dst: np.ndarray,
    shifts: np.ndarray | None,
    n_atoms: int,
    part: np.ndarray,
    n_parts: int,
) -> list[HaloPlan]:
    """Halo plans of every part, vectorised (loops run over parts and peers, not atoms).

    Args:
        src, dst: ``[n_edges]`` int64 global atom indices of each edge ``src -> dst``.
        shifts: ``[n_edges, 3]`` int64 image shifts (``None``: all zero).
        n_atoms: number of atoms.
        part: ``[n_atoms]`` int64 owning part of every atom, in ``[0, n_parts)``.
        n_parts: number of parts; parts without atoms get empty plans.

    Returns:
        ``n_parts`` plans, ``plans[r].rank == r``.
    """
    n_atoms, n_parts = int(n_atoms), int(n_parts)
    if n_parts < 1:
        raise InputError(f"number of parts must be >= 1, got {n_parts}")
    src, dst, shifts = _check_edges(src, dst, shifts)
    part = _check_part(part, n_atoms, n_parts)
    if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n_atoms):
        raise InputError(f"edge endpoints must be atom indices in [0, {n_atoms})")

    # Owned atoms: a stable sort by part keeps ascending global ids within each part.
    atom_order = np.argsort(_small_int(part, n_parts), kind="stable")
    atom_offsets = np.concatenate([[0], np.cumsum(np.bincount(part, minlength=n_parts))])
    owned_local = np.empty(n_atoms, np.int64)
    owned_local[atom_order] = np.arange(n_atoms) - np.repeat(
        atom_offsets[:-1], np.diff(atom_offsets)
    )

    # Edges go to the part of their dst; the stable sort keeps global edge order. All
    # edge arrays are permuted once, so each part's edges are a contiguous slice.
    edge_part = part[dst]
    edge_order = np.argsort(_small_int(edge_part, n_parts), kind="stable")
    edge_offsets = np.concatenate([[0], np.cumsum(np.bincount(edge_part, minlength=n_parts))])
    edge_part = np.repeat(np.arange(n_parts, dtype=np.int64), np.diff(edge_offsets))
    src, dst, shifts = src[edge_order], dst[edge_order], shifts[edge_order]

    # Halo entries: unique (receiver, atom) pairs over remote-source edges, ordered by
    # receiver, then owner, then atom. Receivers' recv and owners' send both come from it.
    remote = part[src] != edge_part
    pair_key = unique_pairs(edge_part[remote], src[remote], n_parts, n_atoms)
    h_recv, h_atom = np.divmod(pair_key, n_atoms)
    h_owner = part[h_atom]
    h_order = np.lexsort((h_atom, h_owner, h_recv))
    h_recv, h_atom, h_owner = h_recv[h_order], h_atom[h_order], h_owner[h_order]
    halo_offsets = np.concatenate([[0], np.cumsum(np.bincount(h_recv, minlength=n_parts))])
    n_owned = np.diff(atom_offsets)
    # Local row of each halo entry in its receiver.
    h_local = (np.arange(len(h_atom)) - halo_offsets[h_recv]) + n_owned[h_recv]
    row_of_pair = np.empty(len(pair_key), np.int64)
    row_of_pair[h_order] = h_local
    # Local src row of every edge: its owned row, or the halo row of (edge part, src).
    if n_parts * n_atoms <= DENSE_LIMIT:  # one table lookup per edge, no masks
        table = np.empty(n_parts * n_atoms, np.int64)
        table[part * n_atoms + np.arange(n_atoms)] = owned_local
        table[pair_key] = row_of_pair
        local_src = table[edge_part * n_atoms + src]
    else:
        local_src = owned_local[src]
        query = edge_part[remote] * n_atoms + src[remote]
        local_src[remote] = row_of_pair[np.searchsorted(pair_key, query)]
    local_dst = owned_local[dst]

    # (receiver, owner) groups: one recv range and one send list each.
    group_start = (
        np.flatnonzero(
            np.concatenate([[True], (h_recv[1:] != h_recv[:-1]) | (h_owner[1:] != h_owner[:-1])])
        )
        if len(h_recv)
        else np.zeros(0, np.int64)
    )
    group_end = np.concatenate([group_start[1:], [len(h_recv)]]).astype(np.int64)
    send: list[dict[int, np.ndarray]] = [{} for _ in range(n_parts)]
    recv: list[dict[int, np.ndarray]] = [{} for _ in range(n_parts)]
    for a, b in zip(group_start.tolist(), group_end.tolist()):
        receiver, owner = int(h_recv[a]), int(h_owner[a])
        recv[receiver][owner] = h_local[a:b]
        send[owner][receiver] = owned_local[h_atom[a:b]]

    plans = []
    for r in range(n_parts):
        e = slice(edge_offsets[r], edge_offsets[r + 1])
        plans.append(
            HaloPlan(
                rank=r,
                n_parts=n_parts,
                n_owned=int(n_owned[r]),
                local_to_global=np.concatenate(
                    [
                        atom_order[atom_offsets[r] : atom_offsets[r + 1]],
                        h_atom[halo_offsets[r] : halo_offsets[r + 1]],
                    ]
                ),
                send=send[r],
                recv=recv[r],
                src=local_src[e],
                dst=local_dst[e],
                shifts=shifts[e],
                edge_global=edge_order[e],
            )
        )
    return plans


def build_halo_plan(
    src: np.ndarray,
    dst: np.ndarray,
    shifts: np.ndarray | None,
    n_atoms: int,
    part: np.ndarray,
    n_parts: int,
    rank: int,
) -> HaloPlan:
    """The plan of one part (see :func:`build_halo_plans`; ``send`` needs all parts' halos)."""
    if not 0 <= int(rank) < int(n_parts):
        raise InputError(f"rank must be in [0, n_parts={n_parts}), got {rank}")
    return build_halo_plans(src, dst, shifts, n_atoms, part, n_parts)[int(rank)]


def check_plans(
    plans: list[HaloPlan],
    src: np.ndarray,
    dst: np.ndarray,
    n_atoms: int,
    part: np.ndarray,
    shifts: np.ndarray | None = None,
) -> None:
    """Check plans against the global graph by direct recount; raise :class:`PlanError`.

    Checks: every atom owned exactly once by ``part``; each part owns exactly the edges
    whose ``dst`` it owns, with the right local endpoints (and shifts when given); the
    halo is exactly the set of remote sources, grouped by owner then global id; ``send``
    of A to B lists the same atoms, in the same order, as ``recv`` of B from A.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    part = np.asarray(part, dtype=np.int64)
    n_parts = len(plans)

    def fail(rank: int, msg: str) -> PlanError:
        return PlanError(f"halo plan of rank {rank}: {msg}")

    owned_count = np.zeros(n_atoms, np.int64)
    for r, plan in enumerate(plans):
        if plan.rank != r or plan.n_parts != n_parts:
            raise fail(r, f"rank/n_parts are {plan.rank}/{plan.n_parts}, expected {r}/{n_parts}")
        l2g = plan.local_to_global
        owned = l2g[: plan.n_owned]
        if not np.array_equal(owned, np.flatnonzero(part == r)):
            raise fail(r, "owned rows are not exactly its atoms in ascending order")
        owned_count[owned] += 1
        edges = np.flatnonzero(part[dst] == r)
        if not np.array_equal(plan.edge_global, edges):
            raise fail(r, "does not own exactly the edges into its atoms")
        if not (
            np.array_equal(l2g[plan.src], src[edges]) and np.array_equal(l2g[plan.dst], dst[edges])
        ):
            raise fail(r, "local edge endpoints do not map to the global ones")
        if shifts is not None and not np.array_equal(plan.shifts, np.asarray(shifts)[edges]):
            raise fail(r, "edge shifts differ from the global graph")
        remote = src[edges][part[src[edges]] != r]
        want = np.unique(remote)
        want = want[np.lexsort((want, part[want]))]
        if not np.array_equal(l2g[plan.n_owned :], want):
            raise fail(r, "halo is not exactly the remote sources grouped by owner")
        for q, rows in plan.recv.items():
            if not np.all(part[l2g[rows]] == q):
                raise fail(r, f"recv[{q}] holds atoms not owned by part {q}")
            if len(rows) == 0:
                raise fail(r, f"recv[{q}] is empty (empty entries must be left out)")
            peer = plans[q]
            if r not in peer.send or not np.array_equal(
                peer.local_to_global[peer.send[r]], l2g[rows]
            ):
                raise fail(r, f"recv[{q}] does not match part {q}'s send[{r}] in content/order")
        for q in plan.send:
            if r not in plans[q].recv:
                raise fail(r, f"send[{q}] has no matching recv[{r}] on part {q}")
    if not np.all(owned_count == 1):
        bad = int(np.flatnonzero(owned_count != 1)[0])
        raise PlanError(f"atom {bad} is owned {owned_count[bad]} times")
