"""The model <-> engine contract (atomshard.models.base): exchanges and capabilities."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from atomshard.models.base import (
    Capabilities,
    OwnedRowsExchange,
    StartableExchange,
    identity_exchange,
    owned_rows,
    startable,
)
from atomshard.models.pair import LennardJones
from atomshard.models.potential import NequIPPotential, preset


class _Owned:
    n_owned = 3

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Startable(_Owned):
    def start(self, x: torch.Tensor):
        class _Pending:
            def wait(self) -> torch.Tensor:
                return x

        return _Pending()


def test_exchange_levels():
    """A plain callable is serial (every row owned, nothing to start); ``n_owned`` makes an
    owned-rows exchange; ``start`` as well makes one a model may overlap."""
    assert owned_rows(identity_exchange, 7) == 7 and startable(identity_exchange) is None
    assert owned_rows(lambda x: 2 * x, 7) == 7
    owned, early = _Owned(), _Startable()
    assert isinstance(owned, OwnedRowsExchange) and not isinstance(owned, StartableExchange)
    assert owned_rows(owned, 7) == 3 and startable(owned) is None
    assert owned_rows(early, 7) == 3 and startable(early) is early
    x = torch.ones(3, 2)
    assert early.start(x).wait() is x


def test_capabilities():
    """Every potential states its range, hops, species and block support; the NequIP
    potential also its memory hooks, which follow its run-time settings."""
    lj = LennardJones()
    caps = lj.capabilities()
    assert caps == Capabilities(
        cutoff=lj.cutoff,
        n_hops=1,
        species=lj.atomic_numbers,
        needs_feature_exchange=False,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.n_hops = 2  # type: ignore[misc]
    model = NequIPPotential.from_config(
        preset("si-config", species=(8, 14), channels=4, n_layers=2, dtype="float64")
    )
    caps = model.capabilities()
    assert (caps.cutoff, caps.n_hops, caps.species) == (model.cutoff, 2, (8, 14))
    assert caps.takes_shells and caps.needs_feature_exchange
    assert caps.activation_bytes_per_atom == model.activation_bytes(1)
    assert caps.checkpoint_free_atoms == model.checkpoint_free_atoms() is not None
    assert model.set_convolution(checkpoint=True).capabilities().checkpoint_free_atoms is None
