"""Per-species dataset statistics, computed once on the training split.

- energy shifts: least-squares fit ``E_s ≈ Σ_Z n_{s,Z} shift_Z`` over the structures
  ``s`` that have a reference energy (minimum-norm solution when compositions are
  linearly dependent; zero shifts, with a warning, when none has one);
- force scales: per-species root mean square of the force components (NequIP's
  ``per_species_forces_rms``), the SI's per-species energy scale; a species without
  reference forces falls back to the all-species value;
- average neighbour count: edges per atom at the model cutoff (the message normaliser).

They initialise the model's ``energy_shift``, ``energy_scale`` and ``avg_num_neighbors``
and are stored in the checkpoint metadata.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from atomshard.errors import InputError
from atomshard.train.data import LabelledStructure


@dataclass(frozen=True)
class DatasetStatistics:
    """Statistics of a training set (see module docstring).

    Attributes:
        species: atomic numbers, the order of the per-species tuples.
        energy_shift: eV per atom of each species.
        force_rms: eV/Å per species (component RMS).
        force_rms_all: eV/Å over every atom with a reference force.
        avg_num_neighbors: mean number of incoming edges per atom.
        n_structures, n_atoms, n_edges: counts behind the numbers.
        n_energy: structures with a reference energy (those the shifts are fitted on).
    """

    species: tuple[int, ...]
    energy_shift: tuple[float, ...]
    force_rms: tuple[float, ...]
    force_rms_all: float
    avg_num_neighbors: float
    n_structures: int
    n_atoms: int
    n_edges: int
    n_energy: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a checkpoint's metadata."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def composition_matrix(samples: Sequence[LabelledStructure], species: Sequence[int]) -> np.ndarray:
    """``[n_structures, n_species]`` float64 atom counts per species."""
    column = {int(z): i for i, z in enumerate(species)}
    out = np.zeros((len(samples), len(species)))
    for k, s in enumerate(samples):
        zs, counts = np.unique(s.structure.species, return_counts=True)
        for z, c in zip(zs, counts):
            if int(z) not in column:
                raise InputError(f"{s.source}: element Z={int(z)} is not in {tuple(species)}")
            out[k, column[int(z)]] = c
    return out


def fit_energy_shifts(
    samples: Sequence[LabelledStructure], species: Sequence[int], *, residual: np.ndarray | None
) -> np.ndarray:
    """Least-squares per-species shifts (eV) of ``energy`` (or of ``residual`` if given),
    fitted on the structures that have a reference energy (zeros if none has).

    Shapes:
        residual: ``[n_structures]`` eV (entries of structures without an energy are
            not read), or None for the reference energies
        returns: ``[n_species]`` eV
    """
    used = [k for k, s in enumerate(samples) if s.energy is not None]
    if not used:
        return np.zeros(len(species))
    a = composition_matrix([samples[k] for k in used], species)
    if residual is None:
        b = np.array([samples[k].energy for k in used], dtype=np.float64)
    else:
        b = np.asarray(residual, dtype=np.float64)[used]
    solution, *_ = np.linalg.lstsq(a, b, rcond=None)
    return np.asarray(solution, dtype=np.float64)


def energy_shift_note(samples: Sequence[LabelledStructure], *, fallback: str) -> str | None:
    """The warning for shifts fitted on part of ``samples`` (None when all have energies).

    Args:
        fallback: what the shifts are when no structure has an energy.
    """
    n_energy = sum(1 for s in samples if s.energy is not None)
    if n_energy == len(samples):
        return None
    if n_energy == 0:
        return (
            f"none of the {len(samples)} training frames has a reference energy: the "
            f"per-species energy shifts are not fitted ({fallback})"
        )
    return (
        f"per-species energy shifts fitted on the {n_energy} of {len(samples)} training "
        "frames that have a reference energy"
    )


def compute_statistics(
    samples: Sequence[LabelledStructure], species: Sequence[int]
) -> DatasetStatistics:
    """Statistics of ``samples`` (each carrying its edges at the model cutoff)."""
    if not samples:
        raise InputError("cannot compute statistics of an empty training set")
    species = tuple(int(z) for z in species)
    shifts = fit_energy_shifts(samples, species, residual=None)
    note = energy_shift_note(samples, fallback="zero")
    if note is not None:
        warnings.warn(note, stacklevel=2)
    sq = np.zeros(len(species))
    count = np.zeros(len(species))
    column = {z: i for i, z in enumerate(species)}
    n_atoms = n_edges = 0
    for s in samples:
        if s.edges is None:
            raise ValueError(f"{s.source}: statistics need edges (with_edges)")
        n_atoms += s.n_atoms
        n_edges += int(s.edges[0].shape[0])
        if s.forces is None:
            continue
        idx = np.array([column[int(z)] for z in s.structure.species])
        np.add.at(sq, idx, (s.forces**2).sum(axis=1))
        np.add.at(count, idx, 3)
    total = float(np.sqrt(sq.sum() / count.sum())) if count.sum() > 0 else 1.0
    total = total if total > 0 else 1.0
    rms = tuple(
        float(np.sqrt(sq[i] / count[i])) if count[i] > 0 and sq[i] > 0 else total
        for i in range(len(species))
    )
    return DatasetStatistics(
        species=species,
        energy_shift=tuple(float(v) for v in shifts),
        force_rms=rms,
        force_rms_all=total,
        avg_num_neighbors=n_edges / n_atoms if n_edges else 1.0,
        n_structures=len(samples),
        n_atoms=n_atoms,
        n_edges=n_edges,
        n_energy=sum(1 for s in samples if s.energy is not None),
    )
