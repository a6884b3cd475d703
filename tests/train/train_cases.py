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
