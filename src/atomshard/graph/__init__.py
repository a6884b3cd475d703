"""Atomic graphs: the one data contract, and neighbour lists (vesin).

:func:`neighbor_list` builds the edges of an :class:`AtomicGraph`; :func:`raw_pairs` is
the bare pair search under it (every directed pair closer than a cutoff, numpy arrays),
for callers that build their own edge sets.
"""

from atomshard.graph._graph import AtomicGraph, edge_vectors
from atomshard.graph._neighbors import NeighborList, neighbor_list, raw_pairs, skin_exceeded
from atomshard.graph._structure import Structure, check_structure

__all__ = [
    "AtomicGraph",
    "NeighborList",
    "Structure",
    "check_structure",
    "edge_vectors",
    "neighbor_list",
    "raw_pairs",
    "skin_exceeded",
]
