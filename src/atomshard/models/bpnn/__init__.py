"""Behler-Parrinello neural-network potentials that reproduce n2p2 exactly.

Example:
    >>> from atomshard.models.bpnn import load_n2p2_potential  # doctest: +SKIP
    >>> model = load_n2p2_potential("H2O_RPBE-D3")  # doctest: +SKIP
"""

from atomshard.models.bpnn._functions import activation, compact_function, cutoff_function
from atomshard.models.bpnn._potential import BACKWARD_MODES, BPNNPotential, load_n2p2_potential
from atomshard.models.bpnn._symmetry import SymmetryPlan, block_features, neighbour_pairs

__all__ = [
    "BACKWARD_MODES",
    "BPNNPotential",
    "SymmetryPlan",
    "activation",
    "block_features",
    "compact_function",
    "cutoff_function",
    "load_n2p2_potential",
    "neighbour_pairs",
]
