"""Atomic graphs: the one data contract, and neighbour lists (vesin)."""

from atomshard.graph._graph import AtomicGraph, edge_vectors
from atomshard.graph._neighbors import NeighborList, neighbor_list
from atomshard.graph._structure import Structure, check_structure

__all__ = [
    "AtomicGraph",
    "NeighborList",
    "Structure",
    "check_structure",
    "edge_vectors",
    "neighbor_list",
]
