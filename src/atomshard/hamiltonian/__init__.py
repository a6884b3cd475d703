"""Electronic-structure matrices: orbital bases, (l, m) conventions, coupled-basis
transforms, block storage, sparse assembly and eigenvalues.

See ``docs/hamiltonian.md`` for the conventions and file formats.
"""

from atomshard.hamiltonian.basis import CONVENTIONS, OrbitalBasis, convention_matrix, parse_shells
from atomshard.hamiltonian.coupled import PairCoupling, coupling_matrix

__all__ = [
    "CONVENTIONS",
    "OrbitalBasis",
    "PairCoupling",
    "convention_matrix",
    "coupling_matrix",
    "parse_shells",
]
