"""Models: interatomic potentials and the Hamiltonian model."""

from atomshard.models.base import (
    Capabilities,
    Exchange,
    OwnedRowsExchange,
    PendingRows,
    Potential,
    Properties,
    StartableExchange,
    compute_properties,
    identity_exchange,
)

__all__ = [
    "Capabilities",
    "Exchange",
    "OwnedRowsExchange",
    "PendingRows",
    "Potential",
    "Properties",
    "StartableExchange",
    "compute_properties",
    "identity_exchange",
]
