"""The property kit is model-agnostic, passes a correct toy potential and catches broken ones."""

from __future__ import annotations

import pytest
import torch

from atomshard.graph import AtomicGraph
from atomshard.models.base import Exchange, Potential
from atomshard.testing import (
    PotentialPropertyTests,
    check_cutoff_smoothness,
    check_forces_finite_difference,
    check_fragments_add_up,
    check_permutation,
    check_rotation,
    check_stress_finite_difference,
    check_translation,
    check_wrapping,
    default_structures,
    random_structure,
)

SPECIES = (1, 8)


class PairPotential(Potential):
    """``E_i = ½ Σ_j a_{Z_i Z_j} (1 - r/r_c)² e^{-r}``, optionally broken on purpose."""

    needs_feature_exchange = False

    def __init__(self, cutoff: float = 3.0, broken: str | None = None) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.atomic_numbers = SPECIES
        self.broken = broken

    def atomic_energies(
        self, graph: AtomicGraph, edge_vec: torch.Tensor, exchange: Exchange
    ) -> torch.Tensor:
        r = torch.linalg.vector_norm(edge_vec, dim=-1)
        envelope = (1.0 - r / self.cutoff) ** 2
        if self.broken == "hard-cutoff":
            envelope = torch.ones_like(r)
        if self.broken == "detached":
            envelope = envelope.detach()
        weight = 1.0 + 0.5 * (graph.species[graph.src] == 8).to(r.dtype)
        if self.broken == "anisotropic":  # depends on the edge direction, not only its length
            weight = weight + edge_vec[:, 0] * edge_vec[:, 1] * edge_vec[:, 2]
        e_edge = 0.5 * weight * envelope * torch.exp(-r)
        energies = torch.zeros(graph.n_atoms, dtype=r.dtype).index_add(0, graph.dst, e_edge)
        if self.broken == "absolute":
            energies = energies + 1e-3 * graph.positions[:, 0]
        if self.broken == "order":
            energies = energies * torch.arange(1, graph.n_atoms + 1, dtype=r.dtype)
        return energies


class TestPairPotential(PotentialPropertyTests):
    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        return PairPotential()

    @pytest.fixture(scope="class")
    @classmethod
    def property_structures(cls):
        return default_structures(SPECIES, n_atoms=6)


@pytest.fixture(scope="module")
def periodic():
    return random_structure(SPECIES, 6, periodic=True, seed=4)


@pytest.fixture(scope="module")
def cluster():
    return random_structure(SPECIES, 5, periodic=False, seed=5)


def test_hard_cutoff_is_caught():
    with pytest.raises(AssertionError, match="energy continuity at the cutoff"):
        check_cutoff_smoothness(PairPotential(broken="hard-cutoff"), SPECIES)


def test_wrong_forces_and_stress_are_caught(periodic):
    model = PairPotential(broken="detached")
    with pytest.raises(AssertionError, match="-dE/dx"):
        check_forces_finite_difference(model, periodic)
    with pytest.raises(AssertionError, match="dE/dε"):
        check_stress_finite_difference(model, periodic)


def test_position_dependence_is_caught(periodic, cluster):
    model = PairPotential(broken="absolute")
    with pytest.raises(AssertionError, match="translation"):
        check_translation(model, cluster)
    with pytest.raises(AssertionError, match="lattice wrapping"):
        check_wrapping(model, periodic)


def test_anisotropy_and_ordering_are_caught(cluster):
    with pytest.raises(AssertionError, match="under rotation"):
        check_rotation(PairPotential(broken="anisotropic"), cluster)
    with pytest.raises(AssertionError, match="permutation"):
        check_permutation(PairPotential(broken="order"), cluster)
    with pytest.raises(AssertionError, match="fragments add up"):
        check_fragments_add_up(PairPotential(broken="order"), cluster, cluster)
