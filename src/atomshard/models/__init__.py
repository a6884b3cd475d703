"""Models: interatomic potentials and the Hamiltonian model."""

from atomshard.models.base import (
    Exchange,
    Potential,
    Properties,
    compute_properties,
    identity_exchange,
)

__all__ = ["Exchange", "Potential", "Properties", "compute_properties", "identity_exchange"]
