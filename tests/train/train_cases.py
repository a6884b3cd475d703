"""Tiny labelled datasets and a tiny model config shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Per-species energy offsets (eV) added to the pair energy, so shifts are learnable.
OFFSETS = {1: -1.5, 8: -4.0}


def tiny_frames(n_frames: int = 6, *, seed: int = 0) -> list:
    """Small periodic H/O cells labelled by ASE's Lennard-Jones plus per-species offsets.

    Each frame has 4-6 atoms in a 3.2-3.8 Å cubic cell, atoms at least 0.9 Å apart.
    """
    import ase
    from ase.calculators.lj import LennardJones
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    while len(frames) < n_frames:
        n = int(rng.integers(4, 7))
        a = float(rng.uniform(3.2, 3.8))
        pos = rng.uniform(0, a, size=(n, 3))
        atoms = ase.Atoms(
            numbers=rng.choice([1, 8], size=n), positions=pos, cell=np.eye(3) * a, pbc=True
        )
        d = atoms.get_all_distances(mic=True)[np.triu_indices(n, 1)]
        if d.min() < 0.9:
            continue
        atoms.calc = LennardJones(sigma=1.0, epsilon=0.05, rc=2.5, smooth=True)
        energy = atoms.get_potential_energy() + sum(OFFSETS[int(z)] for z in atoms.numbers)
        forces, stress = atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        frames.append(atoms)
    return frames


def write_tiny(path: Path, n_frames: int = 6, *, seed: int = 0) -> Path:
    import ase.io

    ase.io.write(str(path), tiny_frames(n_frames, seed=seed), format="extxyz")
    return path


def tiny_model(**overrides) -> dict:
    """The ``model`` section of a tiny training YAML (8 channels, l_max 1, 2 layers)."""
    base = dict(
        kind="potential", channels=8, l_max=1, n_layers=2, cutoff=2.5, n_radial=4,
        radial_hidden=[8],
    )  # fmt: skip
    base.update(overrides)
    return base


def tiny_config(species=(1, 8), dtype: str = "float64"):
    """A tiny :class:`NequIPConfig` for direct (non-YAML) tests."""
    from atomshard.models.potential import NequIPConfig

    return NequIPConfig(
        species=tuple(species), channels=8, l_max=1, n_layers=2, cutoff=2.5, n_radial=4,
        radial_hidden=(8,), avg_num_neighbors=6.0, dtype=dtype, energy_shift=(-1.5, -4.0),
    )  # fmt: skip


def rank_gradient(comm, frames, strategy: str, stress_weight: float = 1.0):
    """Flat gradient of the global-batch loss after the strategy's sync, on this rank.

    Every rank builds the same float64 model (seed 0), trains on its shard
    ``frames[rank::world]`` of the one global batch and syncs gradients.
    """
    import torch

    from atomshard.models.potential import NequIPPotential
    from atomshard.train.data import LabelledStructure
    from atomshard.train.loss import LossWeights
    from atomshard.train.parallel import ForceModel, GradientSync, shard_loss

    assert all(isinstance(f, LabelledStructure) for f in frames)
    rank, world = int(getattr(comm, "rank", 0)), int(getattr(comm, "world_size", 1))
    cfg = tiny_config()
    torch.manual_seed(0)
    model = NequIPPotential.from_config(cfg)
    fm = ForceModel(model, stress=stress_weight > 0)
    sync = GradientSync(strategy, comm, fm)
    samples = [f.with_edges(cfg.cutoff) for f in frames]
    loss = shard_loss(
        sync.forward_module, samples, rank, world, LossWeights(1.0, 1.0, stress_weight)
    )
    (loss * sync.loss_scale).backward()
    sync.after_backward()
    return torch.cat([p.grad.reshape(-1) for p in fm.parameters()]).numpy()
