"""Exact energies, forces and stress of a system too large for memory, one block at a time.

A message-passing potential with ``n_hops`` layers gives atom ``j`` an energy that depends
only on the atoms within ``n_hops`` edges of it. So the total energy splits over any
partition of the atoms into blocks, ``E = Σ_b E_b`` with ``E_b = Σ_{j in b} E_j``, and
``E_b`` is computed exactly on a small graph: the block's atoms, then shell after shell of
the atoms within ``1 .. n_hops`` edges of it (following edges backwards, ``dst -> src``),
with every edge that points into the block or its first ``n_hops - 1`` shells (an atom in
the outermost shell only lends its embedding). Forces and virial are sums of the blocks'
gradients, ``F_i = -Σ_b ∂E_b/∂r_i``: the same numbers as one evaluation of the whole
graph, to round-off, with the memory of one block and its halo.

Models that take :class:`~atomshard.models.base.Shells` (the NequIP potential) also shrink
the work layer by layer (layer ``t`` only updates the atoms within ``n_hops - t`` edges),
so the halo costs a fraction of its size in work.

This is an engine strategy, not a model's: it reads only the model's
:class:`~atomshard.models.base.Capabilities` (hops, shells, memory estimates) and calls
``atomic_energies`` like any serial evaluation.

The blocks come from the project's partitioner (Low-NN by default: compact blocks, the
smallest halo), their number from ``max_atoms`` (the most atoms, halo included, one
block's graph may hold) or from the memory this machine has free (``"auto"``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph, edge_vectors
from atomshard.models.base import (
    Potential,
    Properties,
    Shells,
    frozen_parameters,
    identity_exchange,
)

#: ``max_atoms="auto"`` plans blocks whose estimated peak memory stays below this share of
#: the memory available when the evaluation starts (``MemAvailable``).
AUTO_MEMORY_FRACTION = 0.5
#: peak bytes of a force evaluation per byte of the model's activation estimate
#: (``Capabilities.activation_bytes_per_atom``): the measured ratio (docs/performance.md)
#: plus a margin.
PEAK_PER_ACTIVATION_BYTE = 4.0
#: bytes an edge holds at the peak besides the node activations (float64 geometry, radial
#: basis and spherical harmonics kept for the backward, indices), rounded up
EDGE_BYTES = 512
#: the most re-partitions spent looking for blocks that fit ``max_atoms``
MAX_PLAN_ROUNDS = 6


@dataclass(frozen=True)
class Block:
    """One block's graph, as indices into the whole graph.

    Attributes:
        atoms: ``[n_sub]`` int64 atoms of the whole graph: the block's own, then shell by
            shell (``shells.rows`` gives the boundaries).
        edges: ``[n_sub_edges]`` int64 edges of the whole graph, sorted by their
            destination's position in ``atoms``.
        src, dst: ``[n_sub_edges]`` int64 positions in ``atoms``.
        shells: where each shell of atoms and edges ends.
    """

    atoms: torch.Tensor
    edges: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    shells: Shells

    @property
    def n_own(self) -> int:
        return self.shells.rows[0]

    @property
    def n_atoms(self) -> int:
        return int(self.atoms.shape[0])


def dst_pointer(graph: AtomicGraph) -> torch.Tensor | None:
    """``[n_atoms + 1]`` int64 start of every atom's incoming edges where the edges are
    sorted by destination (as :func:`~atomshard.graph.neighbor_list` builds them), so that
    the edges into atom ``a`` are ``ptr[a]:ptr[a + 1]``; None where they are not sorted.

    With it :func:`block_graph` costs the size of the block, not of the whole graph: a
    million-atom system split into hundreds of blocks no longer scans every edge per
    block.
    """
    dst = graph.dst
    if dst.numel() > 1 and not bool((dst[1:] >= dst[:-1]).all()):
        return None
    counts = torch.bincount(dst, minlength=graph.n_atoms)
    ptr = torch.zeros(graph.n_atoms + 1, dtype=torch.int64, device=dst.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr


def _edges_into(ptr: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """Edges into ``atoms`` (int64), atom by atom in the order given, each atom's edges in
    ascending order: the concatenated ranges ``ptr[a]:ptr[a + 1]``."""
    starts = ptr.index_select(0, atoms)
    counts = ptr.index_select(0, atoms + 1) - starts
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64, device=ptr.device)
    offsets = torch.cumsum(counts, 0) - counts  # where each atom's run starts in the output
    return torch.repeat_interleave(starts - offsets, counts, output_size=total) + torch.arange(
        total, device=ptr.device
    )


def block_graph(
    graph: AtomicGraph, own: torch.Tensor, n_hops: int, *, ptr: torch.Tensor | None = None
) -> Block:
    """The block of atoms ``own`` (bool ``[n_atoms]`` mask) with its ``n_hops`` shells.

    ``ptr`` (:func:`dst_pointer` of ``graph``, computed once for many blocks) gathers each
    block's edges from its own atoms instead of scanning the whole edge list; the block is
    the same either way.
    """
    if n_hops < 1:
        raise ValueError(f"n_hops must be >= 1, got {n_hops}")
    if own.dtype != torch.bool or own.shape != (graph.n_atoms,):
        raise ValueError(
            f"own must be a bool mask of shape ({graph.n_atoms},), got {own.dtype} "
            f"{tuple(own.shape)}"
        )
    if ptr is not None:
        return _block_graph_indexed(graph, own, n_hops, ptr)
    n = graph.n_atoms
    hops = torch.full((n,), n_hops + 1, dtype=torch.int64, device=graph.device)
    hops[own] = 0
    reached = own.clone()
    for k in range(1, n_hops + 1):  # the sources of edges into what is reached so far
        sources = graph.src[reached.index_select(0, graph.dst)]
        new = torch.zeros_like(reached)
        new[sources] = True
        new &= ~reached
        hops[new] = k
        reached |= new
    atoms = torch.cat([torch.nonzero(hops == k).squeeze(1) for k in range(n_hops + 1)])
    rows = torch.cumsum(torch.bincount(hops[atoms], minlength=n_hops + 1), 0)
    position = torch.full((n,), -1, dtype=torch.int64, device=graph.device)
    position[atoms] = torch.arange(atoms.shape[0], device=graph.device)
    edges = torch.nonzero(hops.index_select(0, graph.dst) < n_hops).squeeze(1)
    dst = position.index_select(0, graph.dst.index_select(0, edges))
    order = torch.argsort(dst, stable=True)
    edges, dst = edges.index_select(0, order), dst.index_select(0, order)
    src = position.index_select(0, graph.src.index_select(0, edges))
    counts = torch.searchsorted(dst, rows[:n_hops].contiguous())
    shells = Shells(rows=tuple(int(r) for r in rows), edges=tuple(int(c) for c in counts))
    return Block(atoms=atoms, edges=edges, src=src, dst=dst, shells=shells)


def _block_graph_indexed(
    graph: AtomicGraph, own: torch.Tensor, n_hops: int, ptr: torch.Tensor
) -> Block:
    """:func:`block_graph` through the destination index: shell ``k`` is the sources of the
    edges into shell ``k - 1`` not reached before, each shell in ascending atom order."""
    n, device = graph.n_atoms, graph.device
    reached = own.clone()
    shells = [torch.nonzero(own).squeeze(1)]
    for _ in range(n_hops):
        sources = graph.src.index_select(0, _edges_into(ptr, shells[-1]))
        new = torch.zeros_like(reached)
        new[sources] = True
        new &= ~reached
        reached |= new
        shells.append(torch.nonzero(new).squeeze(1))
    atoms = torch.cat(shells)
    sizes = torch.tensor([s.shape[0] for s in shells], dtype=torch.int64)
    rows = torch.cumsum(sizes, 0)
    position = torch.full((n,), -1, dtype=torch.int64, device=device)
    position[atoms] = torch.arange(atoms.shape[0], device=device)
    inner = atoms[: int(rows[n_hops - 1])]  # the atoms whose incoming edges the block uses
    edges = _edges_into(ptr, inner)
    dst = position.index_select(0, graph.dst.index_select(0, edges))
    src = position.index_select(0, graph.src.index_select(0, edges))
    counts = torch.searchsorted(dst, rows[:n_hops].to(device).contiguous())
    shells_out = Shells(rows=tuple(int(r) for r in rows), edges=tuple(int(c) for c in counts))
    return Block(atoms=atoms, edges=edges, src=src, dst=dst, shells=shells_out)


def memory_available() -> int | None:
    """Bytes of memory available to new work (``MemAvailable`` of ``/proc/meminfo``; the
    cgroup limit where one is lower), or None where neither can be read."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    v1 = "/sys/fs/cgroup/memory/memory."
    for path, used in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (v1 + "limit_in_bytes", v1 + "usage_in_bytes"),
    ):
        try:
            with open(path) as f, open(used) as g:
                limit, current = f.read().strip(), g.read().strip()
            if limit != "max" and int(limit) < 1 << 60:
                found.append(max(int(limit) - int(current), 0))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def auto_max_atoms(
    model: Potential,
    *,
    edges_per_atom: float = 0.0,
    available: int | None = None,
    device: torch.device | str = "cpu",
) -> int | None:
    """The most atoms one block's graph may hold for its estimated peak to stay below
    :data:`AUTO_MEMORY_FRACTION` of the available memory (the GPU's free memory on a CUDA
    device); None where the model gives no estimate
    (``Capabilities.activation_bytes_per_atom``) or the memory cannot be read (then: no
    blocks).

    The estimate per atom is :data:`PEAK_PER_ACTIVATION_BYTE` times the model's
    activation bytes per atom plus :data:`EDGE_BYTES` per edge, a little above what a
    force evaluation was measured to hold (docs/performance.md).
    """
    estimate = model.capabilities().activation_bytes_per_atom
    if available is None:
        device = torch.device(device)
        if device.type == "cuda":
            available = int(torch.cuda.mem_get_info(device)[0])
        else:
            available = memory_available()
    if estimate is None or available is None:
        return None
    per_atom = max(PEAK_PER_ACTIVATION_BYTE * estimate + EDGE_BYTES * edges_per_atom, 1.0)
    return max(int(AUTO_MEMORY_FRACTION * available / per_atom), 1)


def plan_blocks(
    graph: AtomicGraph,
    n_hops: int,
    *,
    max_atoms: int | None = None,
    n_blocks: int | None = None,
    method: str = "lownn",
    n_counted: int | None = None,
) -> torch.Tensor:
    """``[n_atoms]`` int64 block of every atom: ``n_blocks`` of them, or as few as keep
    every block's graph (halo included) within ``max_atoms`` atoms.

    With ``n_counted``, only the first ``n_counted`` atoms are split into blocks (a rank's
    owned atoms, whose energies it counts); the others get block -1 and enter blocks only
    as halo.

    Raises:
        InputError: ``max_atoms`` below what one atom with its halo needs, or no partition
            into at most ``n_atoms`` blocks that fits.
    """
    from atomshard.partition import partition

    n_all, device = graph.n_atoms, graph.device
    n = n_all if n_counted is None else int(n_counted)
    counted = graph if n == n_all else _leading_subgraph(graph, n)

    def full(part: torch.Tensor) -> torch.Tensor:
        out = torch.full((n_all,), -1, dtype=torch.int64, device=device)
        out[:n] = part
        return out

    if n_blocks is not None:
        if n_blocks < 1:
            raise InputError(f"the number of blocks must be >= 1, got {n_blocks}")
        if n_blocks == 1 or n == 0:
            return full(torch.zeros(n, dtype=torch.int64, device=device))
        return full(
            torch.as_tensor(partition(counted, int(n_blocks), method=method), device=device)
        )
    if max_atoms is None or max_atoms >= n_all or n == 0:
        return full(torch.zeros(n, dtype=torch.int64, device=device))
    if max_atoms < 1:
        raise InputError(f"max_atoms must be >= 1, got {max_atoms}")
    k = max(2, math.ceil(n_all / max_atoms)) if n > 1 else 1
    k = min(k, n)
    largest = 0
    ptr = dst_pointer(graph)
    for _ in range(MAX_PLAN_ROUNDS):
        part = full(torch.as_tensor(partition(counted, k, method=method), device=device))
        largest = max(
            (block_graph(graph, part == b, n_hops, ptr=ptr).n_atoms for b in range(k)), default=0
        )
        if largest <= max_atoms:
            return part
        if k >= n:
            break
        # the halo of a compact block grows like its surface: a little more than the ratio
        k = min(n, math.ceil(k * (largest / max_atoms) ** 1.5 * 1.05) + 1)
    raise InputError(
        f"no split of {n} atoms into blocks of at most {max_atoms} atoms with their "
        f"{n_hops}-edge halo (largest block graph: {largest} atoms in {k} blocks); raise "
        "the limit (block_atoms, --block-atoms) or turn it off"
    )


def _leading_subgraph(graph: AtomicGraph, n: int) -> AtomicGraph:
    """The first ``n`` atoms of ``graph`` and the edges among them."""
    keep = (graph.src < n) & (graph.dst < n)
    return AtomicGraph(
        positions=graph.positions[:n],
        species=graph.species[:n],
        cell=graph.cell,
        pbc=graph.pbc,
        src=graph.src[keep],
        dst=graph.dst[keep],
        shifts=graph.shifts[keep],
        cutoff=graph.cutoff,
    )


def iter_blocks(graph: AtomicGraph, part: torch.Tensor, n_hops: int) -> Iterator[Block]:
    """The blocks of ``part``, built one at a time (empty blocks and block -1, atoms that
    are only halo, skipped)."""
    ptr = dst_pointer(graph)
    for b in torch.unique(part).tolist():
        if b >= 0:
            yield block_graph(graph, (part == b).to(graph.device), n_hops, ptr=ptr)


def resolve_max_atoms(
    model: Potential, max_atoms: int | str | None, graph: AtomicGraph | None = None
) -> int | None:
    """``max_atoms`` as a number (``"auto"``: :func:`auto_max_atoms` for ``graph``'s edges
    per atom and device), or None for no limit.

    With ``"auto"`` and a ``graph`` too large for one evaluation, the limit is also kept
    within the model's ``Capabilities.checkpoint_free_atoms`` where it has one: once the
    system is split anyway, more blocks without layer checkpoints beat fewer checkpointed
    ones (docs/performance.md). A system that fits is evaluated whole.

    Raises:
        InputError: anything but a positive whole number, ``"auto"`` or None.
    """
    if max_atoms is None:
        return None
    if isinstance(max_atoms, str):
        if max_atoms.strip().lower() == "auto":
            if graph is None:
                return auto_max_atoms(model)
            per_atom = graph.n_edges / max(graph.n_atoms, 1)
            limit = auto_max_atoms(model, edges_per_atom=per_atom, device=graph.device)
            cap = model.capabilities().checkpoint_free_atoms
            if limit is not None and cap is not None and limit < graph.n_atoms:
                limit = min(limit, cap)
            return limit
        try:
            max_atoms = int(max_atoms)
        except ValueError:
            raise InputError(
                f"block atoms must be a number of atoms or 'auto', got {max_atoms!r}"
            ) from None
    if isinstance(max_atoms, bool) or int(max_atoms) != max_atoms or max_atoms < 1:
        raise InputError(f"block atoms must be a whole number >= 1 or 'auto', got {max_atoms!r}")
    return int(max_atoms)


def evaluate(
    model: Potential,
    graph: AtomicGraph,
    *,
    forces: bool = True,
    stress: bool = True,
    max_atoms: int | str | None = "auto",
    part: torch.Tensor | None = None,
) -> tuple[Properties, torch.Tensor | None]:
    """One serial evaluation: the whole graph at once where it fits in ``max_atoms``
    (:func:`resolve_max_atoms`), else block by block (:func:`compute_properties_in_blocks`,
    reusing ``part`` when given). Returns the properties and the blocks used (None: whole).
    """
    from atomshard.models.base import compute_properties

    limit = resolve_max_atoms(model, max_atoms, graph)
    if part is None and (limit is None or limit >= graph.n_atoms):
        return compute_properties(model, graph, forces=forces, stress=stress), None
    if part is None:
        part = plan_blocks(graph, model.capabilities().n_hops, max_atoms=limit)
    out = compute_properties_in_blocks(model, graph, forces=forces, stress=stress, part=part)
    return out, part


def compute_properties_in_blocks(
    model: Potential,
    graph: AtomicGraph,
    *,
    forces: bool = True,
    stress: bool = True,
    max_atoms: int | str | None = "auto",
    n_blocks: int | None = None,
    method: str = "lownn",
    part: torch.Tensor | None = None,
    progress: bool | None = None,
) -> Properties:
    """Energy, per-atom energies, forces and stress of ``graph``, block by block (serial).

    The same results as :func:`~atomshard.models.base.compute_properties` on the whole graph
    (to round-off: sums run in another order), computed on blocks of at most ``max_atoms``
    atoms with their halo (``"auto"``: from the memory free now, see
    :func:`auto_max_atoms`; None: one block), on ``n_blocks`` blocks, or on the blocks
    ``part`` (``[n_atoms]`` block of every atom; any split gives the same numbers; atoms in
    block -1 are only halo: their energies are not counted, their forces are). No
    gradient reaches the parameters (this is for evaluation, not training). ``progress``
    shows a bar over the blocks (default: when there is more than one and stderr is a
    terminal).
    """
    capabilities = model.capabilities()
    n_hops = capabilities.n_hops
    if part is None:
        limit = resolve_max_atoms(model, max_atoms, graph)
        part = plan_blocks(graph, n_hops, max_atoms=limit, n_blocks=n_blocks, method=method)
    elif part.shape != (graph.n_atoms,):
        raise InputError(f"part has shape {tuple(part.shape)}, expected ({graph.n_atoms},)")
    n = graph.n_atoms
    f64 = torch.float64
    device = graph.device
    cell = graph.cell.detach()
    energies = torch.zeros(n, dtype=f64, device=device)
    total_forces = torch.zeros(n, 3, dtype=f64, device=device) if forces else None
    virial = torch.zeros(3, 3, dtype=f64, device=device) if stress else None
    count = int((torch.unique(part) >= 0).sum())
    if progress is None:
        progress = count > 1 and os.isatty(2)
    from tqdm.auto import tqdm

    bar = tqdm(total=count, desc="blocks", unit="block", disable=not progress, leave=False)
    shells_ok = capabilities.takes_shells
    with frozen_parameters(model):
        for block in iter_blocks(graph, part, n_hops):
            positions = graph.positions.detach().index_select(0, block.atoms)
            positions.requires_grad_(forces)
            strain = None
            pos_used, cell_used = positions, cell
            if stress:
                strain = torch.zeros(3, 3, dtype=cell.dtype, device=device, requires_grad=True)
                deform = torch.eye(3, dtype=cell.dtype, device=device) + 0.5 * (strain + strain.T)
                pos_used, cell_used = positions @ deform, cell @ deform
            shifts = graph.shifts.index_select(0, block.edges)
            sub = AtomicGraph(
                positions=positions.detach(),
                species=graph.species.index_select(0, block.atoms),
                cell=cell,
                pbc=graph.pbc,
                src=block.src,
                dst=block.dst,
                shifts=shifts,
                cutoff=graph.cutoff,
            )
            with torch.set_grad_enabled(forces or stress):
                vec = edge_vectors(pos_used, cell_used, block.src, block.dst, shifts)
                kwargs = {"shells": block.shells} if shells_ok else {}
                e = model.atomic_energies(sub, vec, identity_exchange, **kwargs)[: block.n_own]
                e = e.to(f64)
                inputs = [t for t in (positions if forces else None, strain) if t is not None]
                grads = (
                    list(torch.autograd.grad(e.sum(), inputs, allow_unused=True)) if inputs else []
                )
            energies[block.atoms[: block.n_own]] = e.detach()
            if total_forces is not None:
                g = grads.pop(0)
                if g is not None:
                    total_forces.index_add_(0, block.atoms, -g)
            if virial is not None:
                g = grads.pop(0)
                if g is not None:
                    virial -= g
            del grads, vec, e, sub
            bar.update(1)
    bar.close()
    out = Properties(energy=energies.sum(), energies=energies, forces=total_forces)
    if virial is not None:
        out.virial = virial
        volume = torch.abs(torch.linalg.det(cell))
        if bool(graph.pbc.all()) and float(volume) > 0:
            out.stress = -virial / volume
    return out
