"""What ``pair_style atomshard`` calls: load an export, evaluate it on LAMMPS's atoms.

The C++ pair style (``pair_atomshard.cpp``) embeds this interpreter and calls
:func:`load` from ``pair_coeff`` and :func:`compute` every step, passing the addresses of
LAMMPS's arrays as integers. They are wrapped without copying (``torch.frombuffer`` over
ctypes arrays): positions ``x`` and forces ``f`` ``[nlocal + nghost, 3]``, types, per-atom
energy and virial. The local graph's rows are LAMMPS's atoms, owned first, then ghosts;
ghosts are explicit periodic images, so every shift is zero and ``r = x[src] - x[dst]``.
The edges are the full neighbour list within the model cutoff, ``dst`` owned.

The model is called through the model↔engine contract, ``model.atomic_energies(graph,
edge_vec, exchange)``. Strictly local models get the identity exchange (one ghost shell of
positions is all they need). Message-passing models get :class:`LammpsExchange`, an
:class:`~atomshard.models.base.OwnedRowsExchange` whose forward fills the ghost rows from
their owners through LAMMPS's forward communication and whose backward adds the ghost
rows' gradients into their owners through the reverse communication: the C++ side hands
over two function pointers for that. Every rank calls them in the same order (one per
layer, then one per layer backwards, also where its energy does not depend on a layer's
features: :func:`_edge_gradient`), as LAMMPS's communication requires.

Forces come from ``g = ∂E/∂r`` of the owned energy: ``f[dst] += g``, ``f[src] -= g``
(ghost rows too: LAMMPS sends them home with ``newton on``; with ``newton off`` this
module sends them home itself). The virial is ``W = -Σ r ⊗ g``, symmetrised as the strain
derivative of atomshard's own stress is (LAMMPS order xx, yy, zz, xy, xz, yz); per-atom
virials give half of each edge's term to each end.
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.models.base import Potential, identity_exchange
from atomshard.utils.process import configure_process

#: C signature of the pair style's row communication: (pair, rows [n_local, width], width,
#: bytes per value)
_ROWS_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
#: what the pair style's row communication carries as it is (others travel as float64)
_COMM_DTYPES = (torch.float64, torch.float32)
#: values per atom the pair style's own communication needs (forces 3, per-atom virial 6)
_OWN_WIDTH = 6
_THREADS_SET = False
#: loaded exports by (path, mtime, size, dtype)
_MODELS: dict[tuple[str, int, int, str], tuple[torch.nn.Module, Any]] = {}


class _Rows:
    """LAMMPS's ghost communication of ``[n_local, width]`` rows (in place), float64 or
    float32 (which travels as float32: half the bytes, no conversion)."""

    def __init__(self, pair: int, forward: int, reverse: int) -> None:
        self.pair = ctypes.c_void_p(pair)
        self._forward = _ROWS_FN(forward)
        self._reverse = _ROWS_FN(reverse)

    def forward(self, rows: torch.Tensor) -> None:
        """Ghost rows := their owners' rows."""
        assert rows.dtype in _COMM_DTYPES and rows.is_contiguous() and rows.dim() == 2
        self._forward(self.pair, ctypes.c_void_p(rows.data_ptr()), int(rows.shape[1]),
                      rows.element_size())  # fmt: skip

    def reverse(self, rows: torch.Tensor) -> None:
        """Owner rows += their ghosts' rows (ghost rows are left partial)."""
        assert rows.dtype in _COMM_DTYPES and rows.is_contiguous() and rows.dim() == 2
        self._reverse(self.pair, ctypes.c_void_p(rows.data_ptr()), int(rows.shape[1]),
                      rows.element_size())  # fmt: skip


class _ExchangeFn(torch.autograd.Function):
    """Forward: owned rows in, all local rows out with ghosts from their owners. Backward:
    the adjoint, ghost gradients added into their owners. ``anchor`` (an empty leaf that
    requires grad) puts every exchange into the backward graph, whatever ``x`` depends on:
    see :func:`_edge_gradient`."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, exchange: LammpsExchange, anchor: torch.Tensor
    ) -> torch.Tensor:
        n_owned, n_local = exchange.n_owned, exchange.n_local
        width = math.prod(x.shape[1:])
        comm = x.dtype if x.dtype in _COMM_DTYPES else torch.float64
        # every ghost row is written by the forward communication: no need to clear it
        rows = torch.empty(n_local, width, dtype=comm)
        rows[:n_owned] = x[:n_owned].reshape(n_owned, width)
        exchange.rows.forward(rows)
        # not the exchange itself: it holds the outputs, whose node is this ctx (a cycle
        # that autograd's nodes keep the garbage collector from freeing)
        ctx.rows, ctx.n_owned, ctx.n_local = exchange.rows, n_owned, n_local
        ctx.n_in, ctx.shape, ctx.comm = int(x.shape[0]), tuple(x.shape[1:]), comm
        return rows.to(x.dtype).reshape(n_local, *x.shape[1:])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, torch.Tensor]:
        n_owned, n_local = ctx.n_owned, ctx.n_local
        # a copy: the reverse communication adds into it in place
        rows = grad.reshape(n_local, -1).to(ctx.comm, memory_format=torch.contiguous_format,
                                            copy=True)  # fmt: skip
        ctx.rows.reverse(rows)  # on every rank, also where x needs no gradient
        anchor_grad = torch.zeros(0, dtype=torch.float64)
        if not ctx.needs_input_grad[0]:
            return None, None, anchor_grad
        owned = rows[:n_owned].reshape(n_owned, *ctx.shape).to(grad.dtype)
        if ctx.n_in == n_owned:
            return owned, None, anchor_grad
        out = torch.zeros(ctx.n_in, *ctx.shape, dtype=grad.dtype)
        out[:n_owned] = owned
        return out, None, anchor_grad


@dataclass
class LammpsExchange:
    """``exchange(x)`` over LAMMPS's owned and ghost atoms (an OwnedRowsExchange).

    Every output that takes part in autograd is kept in ``outputs`` (in call order), so
    that :func:`_edge_gradient` runs the reverse exchange of each one on every rank. The
    first ``position_free`` calls (the model's ``position_free_exchanges``: rows that do
    not depend on the positions, on any rank) are sent without autograd: no gradient is
    formed for them and no reverse exchange runs, on every rank alike.

    Shapes:
        x: ``[n_owned, ...]`` or ``[n_local, ...]``; returns ``[n_local, ...]``.
    """

    rows: _Rows
    n_owned: int
    n_local: int
    anchor: torch.Tensor = field(
        default_factory=lambda: torch.zeros(0, dtype=torch.float64, requires_grad=True)
    )
    outputs: list[torch.Tensor] = field(default_factory=list)
    position_free: int = 0
    calls: int = 0

    def __call__(self, x: torch.Tensor, /) -> torch.Tensor:
        if x.shape[0] not in (self.n_owned, self.n_local):
            raise ValueError(
                f"exchange: {x.shape[0]} rows, expected {self.n_owned} or {self.n_local}"
            )
        self.calls += 1
        if self.calls <= self.position_free:
            with torch.no_grad():
                return _ExchangeFn.apply(x.detach(), self, self.anchor)
        out = _ExchangeFn.apply(x, self, self.anchor)
        if out.requires_grad:
            self.outputs.append(out)
        return out


@dataclass
class Handle:
    """A loaded model for one ``pair_coeff`` (what :func:`compute` needs).

    Attributes:
        cutoff: the model cutoff, Å (the pair style's ``init_one``).
        comm_width: values per atom of one LAMMPS communication (the widest exchanged
            row; wider rows travel in chunks of this width).
    """

    model: Potential
    species_of_type: torch.Tensor  # [ntypes + 1] atomic number per LAMMPS type (0: unused)
    cutoff: float
    comm_width: int
    message_passing: bool
    rows: _Rows
    path: str
    position_free_exchanges: int = 0


def _configure_process() -> None:
    """The allocator settings of every atomshard process (glibc's malloc keeps freed
    memory instead of returning it to the system at every step: see
    :func:`atomshard.utils.process.configure_process`), and one share of the node's cores
    per MPI rank unless OMP_NUM_THREADS is set."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    _THREADS_SET = True
    configure_process()
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
        return
    local = 1
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            local = int(value)
            break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, (cores or 1) // local))


def load(
    path: str, elements: list[str], dtype: str, pair: int, forward: int, reverse: int
) -> Handle:
    """``pair_coeff * * PATH ELEMENT...``: the model of the export at ``path``, with
    ``elements[t - 1]`` the element of LAMMPS type ``t``; ``dtype`` ("" = as exported)
    overrides the network dtype. ``pair``, ``forward`` and ``reverse`` are the pair style
    and its row-communication functions (addresses)."""
    from ase.data import atomic_numbers, chemical_symbols

    from atomshard.lammps.export import load_export

    _configure_process()
    stat = os.stat(path) if os.path.isfile(path) else None
    key = (
        os.path.abspath(path),
        stat.st_mtime_ns if stat else 0,
        stat.st_size if stat else 0,
        dtype,
    )
    if key not in _MODELS:  # a run with several `clear`s loads each file once
        _MODELS[key] = load_export(path, dtype=getattr(torch, dtype) if dtype else None)
    loaded, deploy = _MODELS[key]
    model = cast(Potential, loaded)
    if deploy.units != "metal":
        raise InputError(f"{path}: model units {deploy.units!r}, the pair style needs metal")
    known = set(deploy.atomic_numbers)
    zs = [0]
    for t, symbol in enumerate(elements, start=1):
        z = atomic_numbers.get(symbol)
        if z is None:
            raise InputError(
                f"pair_coeff: {symbol!r} (atom type {t}) is not an element symbol; give one "
                f"element per atom type, of {', '.join(deploy.species)}"
            )
        if z not in known:
            raise InputError(
                f"pair_coeff: element {chemical_symbols[z]} (atom type {t}) is not known to "
                f"the model {path}, which knows {', '.join(deploy.species)}"
            )
        zs.append(z)
    for p in model.parameters():
        p.requires_grad_(False)
    if hasattr(model, "checkpoint"):  # recomputing layers would repeat exchanges on one rank
        setattr(model, "checkpoint", False)  # noqa: B010 (not every Potential has it)
    caps = model.capabilities()
    message_passing = bool(caps.needs_feature_exchange)
    return Handle(
        model=model,
        species_of_type=torch.tensor(zs, dtype=torch.int64),
        cutoff=float(deploy.cutoff),
        comm_width=max(_OWN_WIDTH, deploy.exchange_width if message_passing else 0),
        message_passing=message_passing,
        rows=_Rows(pair, forward, reverse),
        path=str(path),
        position_free_exchanges=int(caps.position_free_exchanges),
    )


def _wrap(address: int, count: int, ctype: Any, dtype: torch.dtype) -> torch.Tensor:
    """The ``count`` values at ``address`` as a tensor that shares LAMMPS's memory."""
    if count == 0 or not address:
        return torch.zeros(0, dtype=dtype)
    return torch.frombuffer((ctype * count).from_address(address), dtype=dtype)


def compute(
    h: Handle,
    nlocal: int,
    nghost: int,
    x_address: int,
    type_address: int,
    n_edges: int,
    src_address: int,
    dst_address: int,
    f_address: int,
    eatom_address: int,
    vatom_address: int,
    eflag_global: int,
    vflag_global: int,
    newton: int,
) -> tuple[float, float, float, float, float, float, float]:
    """One force evaluation; adds into LAMMPS's ``f`` (and ``eatom``/``vatom`` when given)
    and returns ``(energy, vxx, vyy, vzz, vxy, vxz, vyz)`` of this rank's owned atoms."""
    n = nlocal + nghost
    x = _wrap(x_address, 3 * n, ctypes.c_double, torch.float64).view(n, 3)
    types = _wrap(type_address, n, ctypes.c_int, torch.int32)
    src = _wrap(src_address, n_edges, ctypes.c_int64, torch.int64)
    dst = _wrap(dst_address, n_edges, ctypes.c_int64, torch.int64)
    species = h.species_of_type.index_select(0, types.to(torch.int64))
    edge_vec = (x.index_select(0, src) - x.index_select(0, dst)).requires_grad_(True)
    graph = AtomicGraph(
        positions=x,
        species=species,
        cell=torch.zeros(3, 3, dtype=torch.float64),
        pbc=torch.zeros(3, dtype=torch.bool),
        src=src,
        dst=dst,
        shifts=torch.zeros(n_edges, 3, dtype=torch.int64),
        cutoff=h.cutoff,
    )
    exchange = (
        LammpsExchange(h.rows, nlocal, n, position_free=h.position_free_exchanges)
        if h.message_passing
        else identity_exchange
    )
    try:
        with torch.enable_grad():
            energies = h.model.atomic_energies(graph, edge_vec, exchange)[:nlocal]
            energies = energies.to(torch.float64)
            energy = energies.sum()
            g = _edge_gradient(energy, edge_vec, exchange)
    finally:
        if isinstance(exchange, LammpsExchange):
            exchange.outputs.clear()  # nothing of this step's graph outlives the step
    r = edge_vec.detach()
    forces = torch.zeros(n, 3, dtype=torch.float64)
    forces.index_add_(0, dst, g).index_add_(0, src, g, alpha=-1.0)
    _add_owned(h, forces, f_address, nlocal, n, newton)
    if eatom_address:
        _wrap(eatom_address, nlocal, ctypes.c_double, torch.float64).add_(energies.detach())
    virial = [0.0] * 6
    if vflag_global or vatom_address:
        w = -(r.unsqueeze(2) * g.unsqueeze(1))  # [n_edges, 3, 3]: -r_a g_b
        w = 0.5 * (w + w.transpose(1, 2))  # the strain derivative's (symmetric) virial
        w6 = torch.stack(
            [w[:, 0, 0], w[:, 1, 1], w[:, 2, 2], w[:, 0, 1], w[:, 0, 2], w[:, 1, 2]], dim=1
        )
        if vflag_global:
            virial = [float(v) for v in w6.sum(0)]
        if vatom_address:
            per_atom = torch.zeros(n, 6, dtype=torch.float64)
            per_atom.index_add_(0, src, w6, alpha=0.5).index_add_(0, dst, w6, alpha=0.5)
            _add_owned(h, per_atom, vatom_address, nlocal, n, newton)
    return (float(energy.detach()), *virial)  # type: ignore[return-value]


def _edge_gradient(energy: torch.Tensor, edge_vec: torch.Tensor, exchange: Any) -> torch.Tensor:
    """``g = dE/d(edge_vec)`` (zeros where E does not depend on it), with the reverse
    exchange of every forward exchange run on every rank.

    The peers of a rank wait in LAMMPS's reverse communication once per exchange. A rank
    whose energy does not reach an exchange (no gradient there: energies detached, or a
    model whose first features depend on the species only) would skip it and leave them
    waiting, or answer the next message with the wrong rows. So every exchange output is
    a root of the one backward pass, seeded with zeros, and the anchor every exchange
    takes is an input: autograd then runs each exchange's backward exactly once, in the
    reverse order of the forward (later exchanges depend on earlier ones, and autograd
    runs independent nodes newest first), on every rank alike.

    Shapes:
        energy: ``[]`` float64 eV; edge_vec: ``[n_edges, 3]`` float64 Å; returns
        ``[n_edges, 3]`` eV/Å.
    """
    roots, seeds, inputs = [], [], [edge_vec]
    if energy.requires_grad:
        roots.append(energy)
        seeds.append(torch.ones_like(energy))
    if isinstance(exchange, LammpsExchange):
        roots.extend(exchange.outputs)
        seeds.extend(torch.zeros_like(out) for out in exchange.outputs)
        inputs.append(exchange.anchor)
    if not roots:
        return torch.zeros_like(edge_vec)
    g = torch.autograd.grad(roots, inputs, seeds, allow_unused=True)[0]
    return torch.zeros_like(edge_vec) if g is None else g


def _add_owned(h: Handle, rows: torch.Tensor, address: int, nlocal: int, n: int, newton: int):
    """Add per-atom ``rows [n, w]`` into LAMMPS's array at ``address``: every row with
    ``newton on`` (LAMMPS sends ghost rows home), else ghost rows sent home here first."""
    width = int(rows.shape[1])
    if newton:
        _wrap(address, n * width, ctypes.c_double, torch.float64).view(n, width).add_(rows)
        return
    rows = rows.contiguous()
    h.rows.reverse(rows)
    _wrap(address, nlocal * width, ctypes.c_double, torch.float64).view(nlocal, width).add_(
        rows[:nlocal]
    )
