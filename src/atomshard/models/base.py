"""The model <-> engine contract shared by every interatomic potential.

A potential maps a graph and its edge vectors to per-atom energies. Everything else —
total energy, forces, stress — is derived once, here, by autograd, so serial,
distributed and every model type share one code path.

What the engine may ask of a model is its :class:`Capabilities` (range, hops, species,
block support, memory estimates); what a model may ask of the engine is its
:class:`Exchange`. Between message-passing layers a model calls ``exchange(x)`` on its
per-atom features; serially that is the identity, in the graph-parallel runtime it
refreshes halo rows from their owners (and its backward sends halo gradients home). An
exchange that also satisfies :class:`OwnedRowsExchange` tells how many rows are owned;
a :class:`StartableExchange` (the runtime's ``comm.HaloExchange``) can also be started
early, so that a model overlaps it with work on its interior atoms. Models never ask
whether they are distributed, and never import ``comm`` or ``partition``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from atomshard.graph import AtomicGraph, edge_vectors


class Exchange(Protocol):
    """What a model calls between layers: ``exchange(x)`` refreshes the halo rows.

    Shapes:
        x: ``[n_local, ...]`` (or, for an :class:`OwnedRowsExchange`, the ``[n_owned, ...]``
            owned rows alone); returns ``[n_local, ...]``. Identity serially.
    """

    def __call__(self, x: torch.Tensor, /) -> torch.Tensor: ...


class PendingRows(Protocol):
    """A started exchange (:meth:`StartableExchange.start`): :meth:`wait` finishes it."""

    def wait(self) -> torch.Tensor:
        """The exchanged rows ``[n_local, ...]``, once the halo rows have arrived."""
        ...


@runtime_checkable
class OwnedRowsExchange(Exchange, Protocol):
    """An exchange over a rank's owned and halo rows (the graph-parallel runtime's).

    Attributes:
        n_owned: the leading rows this rank owns; the rest of the ``n_local`` rows are its
            halo. The exchange accepts ``[n_owned, ...]`` and returns ``[n_local, ...]``.
    """

    @property
    def n_owned(self) -> int: ...


@runtime_checkable
class StartableExchange(OwnedRowsExchange, Protocol):
    """An :class:`OwnedRowsExchange` that can be started early, so that a model overlaps
    it with the work on its interior atoms (the runtime's ``comm.HaloExchange``)."""

    def start(self, x: torch.Tensor) -> PendingRows:
        """Post the exchange of ``x`` (as for a call) and return at once; compute with the
        owned rows while it travels, then ``wait()`` (same result as a call)."""
        ...


def identity_exchange(x: torch.Tensor) -> torch.Tensor:
    """The serial exchange: there are no halo rows to refresh."""
    return x


def owned_rows(exchange: Exchange, n_local: int) -> int:
    """How many leading rows of the local graph this rank owns (the rest are its halo).

    The exchange's ``n_owned`` for an :class:`OwnedRowsExchange`, else all ``n_local``
    rows (serial). A model computes its node-wise layers on these rows only: halo rows get
    their values from the exchange, so computing them locally would be redundant work.
    """
    if isinstance(exchange, OwnedRowsExchange):
        return int(exchange.n_owned)
    return n_local


def startable(exchange: Exchange) -> StartableExchange | None:
    """``exchange`` where it can be started early (:class:`StartableExchange`), else None
    (serial, or a plain callable)."""
    return exchange if isinstance(exchange, StartableExchange) else None


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a potential tells the engine about itself (:meth:`Potential.capabilities`).

    Attributes:
        cutoff: the edge cutoff, Å.
        n_hops: how many edges away an atom can still change another's energy
            (message-passing layers; 1 for a strictly local model): the depth of the halo
            a block of atoms needs.
        species: the atomic numbers it knows.
        needs_feature_exchange: False for strictly local models (one position exchange
            per step is all they need).
        takes_shells: whether ``atomic_energies`` takes ``shells=`` (:class:`Shells`) and
            then works, layer by layer, only on the atoms and edges the counted atoms'
            energies still need (block-by-block evaluation).
        activation_bytes_per_atom: the node activations one atom adds to a force
            evaluation (bytes), or None where the model gives no estimate.
        checkpoint_free_atoms: the most atoms one evaluation may hold before the model
            turns on layer checkpoints by itself, or None (no such switch, or set
            outright).
        position_free_exchanges: how many of the first exchanges of ``atomic_energies``
            carry rows that do not depend on the positions (the first layer's input is a
            function of the species alone), by construction, on every rank: an engine
            may send those rows without their gradients' reverse exchange.
    """

    cutoff: float
    n_hops: int
    species: tuple[int, ...]
    needs_feature_exchange: bool = True
    takes_shells: bool = False
    activation_bytes_per_atom: int | None = None
    checkpoint_free_atoms: int | None = None
    position_free_exchanges: int = 0


class Potential(nn.Module):
    """Base class of interatomic potentials.

    Subclasses set :attr:`cutoff` (Å) and :attr:`atomic_numbers` (the elements they know)
    and implement :meth:`atomic_energies`. :attr:`needs_feature_exchange` is False for
    strictly local models (one position exchange per step is all they need). The engine
    reads these through :meth:`capabilities`.
    """

    cutoff: float
    atomic_numbers: tuple[int, ...]
    needs_feature_exchange: bool = True
    #: how many edges away an atom can still change another's energy (message-passing
    #: layers; 1 for a strictly local model): the depth of the halo a block of atoms needs
    #: (:mod:`atomshard.runtime.blocks`)
    n_hops: int = 1
    #: whether :meth:`atomic_energies` takes ``shells=`` (:class:`Shells`) and then works,
    #: layer by layer, only on the atoms and edges the owned atoms' energies still need
    takes_shells: bool = False
    #: leading exchanges whose rows never depend on the positions (see Capabilities)
    position_free_exchanges: int = 0

    def capabilities(self) -> Capabilities:
        """What this model tells the engine (read afresh: run-time settings may change the
        memory hooks)."""
        return Capabilities(
            cutoff=float(self.cutoff),
            n_hops=int(self.n_hops),
            species=tuple(int(z) for z in self.atomic_numbers),
            needs_feature_exchange=bool(self.needs_feature_exchange),
            takes_shells=bool(self.takes_shells),
            activation_bytes_per_atom=self.activation_bytes_per_atom(),
            checkpoint_free_atoms=self.checkpoint_free_atoms(),
            position_free_exchanges=int(self.position_free_exchanges),
        )

    def activation_bytes_per_atom(self) -> int | None:
        """The node activations one atom adds to a force evaluation (bytes), or None (no
        estimate: the default)."""
        return None

    def checkpoint_free_atoms(self) -> int | None:
        """The most atoms one evaluation may hold before the model checkpoints its layers
        by itself, or None (the default: no such switch)."""
        return None

    def atomic_energies(
        self, graph: AtomicGraph, edge_vec: torch.Tensor, exchange: Exchange
    ) -> torch.Tensor:
        """Per-atom energies.

        Shapes:
            edge_vec: ``[n_edges, 3]`` float64 Å (``graph.edge_vectors()`` or a strained copy)
            returns: ``[n]`` float64, eV, ``n_atoms >= n >= owned_rows(exchange, n_atoms)``
            (only the owned rows count)
        """
        raise NotImplementedError  # abstract: every concrete potential overrides it

    def check_species(self, species: torch.Tensor, *, name: str = "structure") -> None:
        """Raise :class:`~atomshard.errors.InputError` naming an atom of an unknown element."""
        from ase.data import chemical_symbols

        from atomshard.errors import InputError

        known = torch.tensor(self.atomic_numbers, dtype=species.dtype, device=species.device)
        bad = ~torch.isin(species, known)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            z = int(species[i])
            raise InputError(
                f"{name}: atom {i} is {chemical_symbols[z]} (Z={z}), which this model does not "
                f"know; it knows {', '.join(chemical_symbols[k] for k in self.atomic_numbers)}"
            )


@dataclass(frozen=True)
class Shells:
    """A graph whose atoms are ordered by their distance, in edges, from its first
    ``rows[0]`` atoms (the ones whose energies count) and whose edges are sorted by
    destination (:mod:`atomshard.runtime.blocks` builds them).

    Attributes:
        rows: ``rows[k]`` atoms lie within ``k`` edges of the counted ones,
            ``k = 0 .. n_hops`` (``rows[n_hops]`` is every atom of the graph).
        edges: ``edges[k]`` edges point into those ``rows[k]`` atoms, ``k = 0 .. n_hops - 1``
            (no edge points into the outermost shell).

    Message-passing layer ``t`` (of ``n_hops``) then only needs its input on the first
    ``rows[n_hops - t]`` atoms and only the first ``edges[n_hops - 1 - t]`` edges: the
    receptive field of the counted atoms shrinks by one shell per layer.
    """

    rows: tuple[int, ...]
    edges: tuple[int, ...]


@dataclass
class Properties:
    """Results of one evaluation, all float64.

    Shapes:
        energy: ``[]`` eV (sum over owned atoms)
        energies: ``[n_owned]`` eV
        forces: ``[n_owned, 3]`` eV/Å, or None
        stress: ``[3, 3]`` eV/Å³ (ASE sign convention), or None (non-periodic systems)
        virial: ``[3, 3]`` eV, ``-V * stress``, or None
    """

    energy: torch.Tensor
    energies: torch.Tensor
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None
    virial: torch.Tensor | None = None


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters do not require grad inside the block (restored after, also on error).

    A force/stress evaluation differentiates with respect to positions and strain only,
    but autograd saves every input an op needs for *any* gradient it might be asked for:
    with trainable weights, each linear layer keeps its input rows for the weight
    gradient. For the NequIP potential that is the layer's aggregated messages
    ``[n_atoms, dim(irreps_mid)]``, several times what the frozen evaluation keeps.
    """
    live = [p for p in model.parameters() if p.requires_grad]
    for p in live:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in live:
            p.requires_grad_(True)


def compute_properties(
    model: Potential,
    graph: AtomicGraph,
    *,
    forces: bool = True,
    stress: bool = True,
    exchange: Exchange = identity_exchange,
    n_owned: int | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    create_graph: bool = False,
    position_exchange: Exchange | None = None,
) -> Properties:
    """Energy, per-atom energies, forces and stress of ``graph`` by autograd.

    Stress is the derivative with respect to a symmetric strain ``ε`` applied to
    positions and cell (``x -> x (1 + ε)``), divided by the volume. Only the first
    ``n_owned`` atoms (all by default) count towards the energy; ``reduce`` (a sum over
    ranks in the runtime) turns the local energy and virial into global ones.

    Without ``create_graph`` every output is detached, so no gradient can reach the
    parameters: the model then runs with them frozen (:func:`frozen_parameters`) and
    autograd keeps only what the position/strain gradients need (same numbers, far less
    memory).
    """
    freeze = frozen_parameters(model) if not create_graph else contextlib.nullcontext()
    with freeze:
        return _properties(
            model, graph, forces, stress, exchange, n_owned, reduce, create_graph,
            position_exchange,
        )  # fmt: skip


def _properties(
    model: Potential,
    graph: AtomicGraph,
    forces: bool,
    stress: bool,
    exchange: Exchange,
    n_owned: int | None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None,
    create_graph: bool,
    position_exchange: Exchange | None,
) -> Properties:
    """The body of :func:`compute_properties` (parameters already frozen or not)."""
    n_owned = graph.n_atoms if n_owned is None else n_owned
    need_grad = forces or stress
    positions = graph.positions.detach().requires_grad_(forces)
    cell = graph.cell.detach()
    routed = positions if position_exchange is None else position_exchange(positions)
    strain = None
    if stress:
        strain = torch.zeros(3, 3, dtype=cell.dtype, device=cell.device, requires_grad=True)
        sym = 0.5 * (strain + strain.transpose(0, 1))
        deform = torch.eye(3, dtype=cell.dtype, device=cell.device) + sym
        positions_used = routed @ deform
        cell_used = cell @ deform
    else:
        positions_used, cell_used = routed, cell
    vec = edge_vectors(positions_used, cell_used, graph.src, graph.dst, graph.shifts)
    with torch.set_grad_enabled(need_grad or torch.is_grad_enabled()):
        energies = model.atomic_energies(graph, vec, exchange).to(torch.float64)
    owned = energies[:n_owned]
    energy = owned.sum()
    out = Properties(energy=energy, energies=owned)
    if need_grad:
        inputs = [t for t in (positions if forces else None, strain) if t is not None]
        grads = torch.autograd.grad(energy, inputs, create_graph=create_graph, allow_unused=True)
        g = list(grads)
        if forces:
            gp = g.pop(0)
            f = -gp if gp is not None else torch.zeros_like(positions)
            out.forces = f[:n_owned]
        if stress:
            gs = g.pop(0)
            virial = -(gs if gs is not None else torch.zeros_like(cell))
            out.virial = virial
    if reduce is not None:
        out.energy = reduce(out.energy)
        if out.virial is not None:
            out.virial = reduce(out.virial)
    if stress and out.virial is not None:
        volume = torch.abs(torch.linalg.det(cell))
        if bool(graph.pbc.all()) and float(volume) > 0:
            out.stress = -out.virial / volume
        else:
            out.stress = None
    if not create_graph:
        out.energy = out.energy.detach()
        out.energies = out.energies.detach()
    return out
