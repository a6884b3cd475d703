"""The SO(2) equivariant Hamiltonian model (node and edge embeddings -> H blocks)."""

from atomshard.models.hamiltonian.committee import HamiltonianCommittee
from atomshard.models.hamiltonian.config import HamiltonianConfig
from atomshard.models.hamiltonian.model import HamiltonianModel, HamiltonianPrediction

__all__ = ["HamiltonianCommittee", "HamiltonianConfig", "HamiltonianModel", "HamiltonianPrediction"]
