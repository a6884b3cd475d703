"""Nothing of one LAMMPS step's autograd graph outlives the step.

The bridge's exchange keeps every output it made (so that every rank runs every reverse
exchange); if the autograd node of an output also held the exchange, the two would form a
cycle that autograd's C++ nodes hide from Python's garbage collector, and every step of a
long run would keep its exchanged feature rows: memory growing without bound. Here the
exchange runs on one process (owned rows are all the rows, so LAMMPS's communication is
a no-op stub) through the bridge's own autograd function and gradient routine, with the
output list deliberately not cleared: after the step the exchange must be freed by
reference counting alone, and the edge gradient must equal the model's plain one.
"""

from __future__ import annotations

import gc
import weakref

import torch
from ase.build import bulk

from atomshard.graph import AtomicGraph
from atomshard.lammps.bridge import LammpsExchange, _edge_gradient
from atomshard.models.base import identity_exchange
from tests.distributed.distributed_cases import random_nequip


class _NoComm:
    """LAMMPS's ghost communication when there are no ghosts: nothing to send."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def forward(self, rows: torch.Tensor) -> None:
        self.calls.append("forward")

    def reverse(self, rows: torch.Tensor) -> None:
        self.calls.append("reverse")


def _silicon_gradient(model, seed: int):
    """A rattled 8-atom silicon cell's graph, and ``gradient(exchange)``: the bridge's edge
    gradient of the model's energy evaluated with that exchange."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=seed)
    graph = AtomicGraph.from_ase(atoms, model.cutoff)

    def gradient(exchange):
        vec = graph.edge_vectors().detach().requires_grad_(True)
        with torch.enable_grad():
            energy = model.atomic_energies(graph, vec, exchange).to(torch.float64).sum()
            return _edge_gradient(energy, vec, exchange)

    return graph, gradient


def test_exchange_is_freed_after_the_step_and_gradient_is_exact():
    model = random_nequip(n_layers=2)
    graph, gradient = _silicon_gradient(model, seed=3)
    n = graph.n_atoms
    comm = _NoComm()
    exchange = LammpsExchange(comm, n, n)  # type: ignore[arg-type]
    g = gradient(exchange)
    assert len(exchange.outputs) >= 1  # the model exchanged (and the list is not cleared)
    n_exchanges = len(exchange.outputs)
    assert comm.calls == ["forward"] * n_exchanges + ["reverse"] * n_exchanges
    alive = weakref.ref(exchange)
    del exchange
    gc.collect()
    assert alive() is None, "the step's exchange (and its outputs) outlived the step"

    plain = gradient(identity_exchange)
    assert float((g - plain).abs().max()) <= 1e-12 * float(plain.abs().max())


def test_position_free_exchange_has_no_reverse_and_the_same_gradient():
    """The NequIP-class model's first exchange carries Linear_1 of the species embedding
    (``position_free_exchanges`` = 1): the bridge sends it without autograd, so it runs
    one reverse exchange fewer than forward ones, and the edge gradient is unchanged."""
    model = random_nequip(n_layers=3)
    assert model.capabilities().position_free_exchanges == 1
    for p in model.parameters():  # as the bridge loads a model
        p.requires_grad_(False)
    graph, gradient = _silicon_gradient(model, seed=4)
    n = graph.n_atoms
    comm = _NoComm()
    exchange = LammpsExchange(comm, n, n, position_free=1)  # type: ignore[arg-type]
    g = gradient(exchange)
    assert comm.calls == ["forward"] * 3 + ["reverse"] * 2
    plain = gradient(identity_exchange)
    assert float((g - plain).abs().max()) <= 1e-12 * float(plain.abs().max())
