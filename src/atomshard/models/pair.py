"""Classical pair potentials: cheap reference models for tests, demos and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.models.base import Exchange, Potential


@dataclass(frozen=True, kw_only=True)
class LennardJonesConfig:
    """Parameters of :class:`LennardJones` (eV, Å)."""

    epsilon: float = 0.0104
    sigma: float = 3.40
    cutoff: float = 8.5
    switch_on: float | None = None
    atomic_numbers: tuple[int, ...] = (18,)


class LennardJones(Potential):
    """Lennard-Jones ``4ε[(σ/r)¹² − (σ/r)⁶]`` with a smooth switch to zero at the cutoff.

    The switch ``S(r) = 1 − 10x³ + 15x⁴ − 6x⁵`` on ``x = (r − r_on)/(r_c − r_on)`` makes
    energy, forces and their first derivative continuous, so NVE runs conserve energy.
    Each pair's energy is split half-and-half between its two atoms.

    Args:
        epsilon: well depth, eV. sigma: Å. cutoff: Å. switch_on: start of the switch, Å
            (default ``0.8 * cutoff``). atomic_numbers: elements the model accepts.
    """

    needs_feature_exchange = False
    config_class = LennardJonesConfig

    def __init__(
        self,
        *,
        epsilon: float = 0.0104,
        sigma: float = 3.40,
        cutoff: float = 8.5,
        switch_on: float | None = None,
        atomic_numbers: tuple[int, ...] = (18,),
    ) -> None:
        super().__init__()
        if not (epsilon > 0 and sigma > 0 and cutoff > 0):
            raise InputError(
                f"LennardJones needs positive epsilon, sigma, cutoff; got "
                f"{epsilon}, {sigma}, {cutoff}"
            )
        self.epsilon = float(epsilon)
        self.sigma = float(sigma)
        self.cutoff = float(cutoff)
        self.switch_on = float(0.8 * cutoff if switch_on is None else switch_on)
        if not 0 < self.switch_on < self.cutoff:
            raise InputError(f"switch_on must lie in (0, cutoff), got {self.switch_on}")
        self.atomic_numbers = tuple(int(z) for z in atomic_numbers)
        self.config = LennardJonesConfig(
            epsilon=self.epsilon,
            sigma=self.sigma,
            cutoff=self.cutoff,
            switch_on=self.switch_on,
            atomic_numbers=self.atomic_numbers,
        )

    @classmethod
    def from_config(cls, config: LennardJonesConfig) -> LennardJones:
        return cls(
            epsilon=config.epsilon,
            sigma=config.sigma,
            cutoff=config.cutoff,
            switch_on=config.switch_on,
            atomic_numbers=config.atomic_numbers,
        )

    def atomic_energies(
        self, graph: AtomicGraph, edge_vec: torch.Tensor, exchange: Exchange
    ) -> torch.Tensor:
        r = torch.linalg.vector_norm(edge_vec, dim=1)
        s6 = (self.sigma / r) ** 6
        phi = 4.0 * self.epsilon * (s6 * s6 - s6)
        x = ((r - self.switch_on) / (self.cutoff - self.switch_on)).clamp(0.0, 1.0)
        switch = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x * x)
        pair = 0.5 * phi * switch * (r < self.cutoff)
        out = torch.zeros(graph.n_atoms, dtype=edge_vec.dtype, device=edge_vec.device)
        return out.index_add(0, graph.dst, pair)
