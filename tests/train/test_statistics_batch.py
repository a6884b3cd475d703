"""Dataset statistics against a brute-force recount; batched == one-by-one properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from atomshard.graph import AtomicGraph
from atomshard.models.base import compute_properties
from atomshard.models.potential import NequIPPotential
from atomshard.train.batch import collate, predict_batch
from atomshard.train.data import labelled_from_atoms
from atomshard.train.statistics import compute_statistics
from tests.train.train_cases import OFFSETS, tiny_config, tiny_frames

CUTOFF = 2.5


def _samples(n=5, seed=2):
    return [
        labelled_from_atoms(a, f"frame {k}").with_edges(CUTOFF)
        for k, a in enumerate(tiny_frames(n, seed=seed))
    ]


def _brute_neighbours(s) -> int:
    """Pairs (i, j, image) closer than the cutoff, by explicit loops over images."""
    st = s.structure
    count = 0
    reach = [int(np.ceil(CUTOFF / (abs(np.linalg.det(st.cell)) / np.linalg.norm(
        np.cross(st.cell[(k + 1) % 3], st.cell[(k + 2) % 3]))))) for k in range(3)]  # fmt: skip
    images = itertools.product(*(range(-r, r + 1) for r in reach))
    images = [np.array(im) for im in images]
    for i in range(st.n_atoms):
        for j in range(st.n_atoms):
            for im in images:
                if i == j and not im.any():
                    continue
                d = st.positions[j] + im @ st.cell - st.positions[i]
                count += float(np.sqrt(d @ d)) < CUTOFF
    return count


def test_statistics_agree_with_brute_force_recount():
    samples = _samples()
    stats = compute_statistics(samples, (1, 8))
    edges = sum(_brute_neighbours(s) for s in samples)
    atoms = sum(s.n_atoms for s in samples)
    assert stats.n_edges == edges and stats.n_atoms == atoms
    assert stats.avg_num_neighbors == pytest.approx(edges / atoms, rel=1e-15)
    # force RMS per species, atom by atom
    for k, z in enumerate((1, 8)):
        comps = [f for s in samples for zi, row in zip(s.structure.species, s.forces)
                 if zi == z for f in row]  # fmt: skip
        assert stats.force_rms[k] == pytest.approx(np.sqrt(np.mean(np.square(comps))), rel=1e-12)
    # least-squares shifts from the normal equations on loop-counted compositions
    a = np.array([[sum(1 for zi in s.structure.species if zi == z) for z in (1, 8)]
                  for s in samples], dtype=float)  # fmt: skip
    b = np.array([s.energy for s in samples])
    expected = np.linalg.solve(a.T @ a, a.T @ b)
    np.testing.assert_allclose(stats.energy_shift, expected, rtol=1e-10)
    # the LJ part is small, so the shifts land near the per-species offsets
    assert stats.energy_shift == pytest.approx([OFFSETS[1], OFFSETS[8]], abs=0.2)


def test_batched_properties_equal_one_by_one():
    import ase.build

    water = ase.build.molecule("H2O")  # non-periodic: no stress, still batched
    water.calc = None
    from ase.calculators.singlepoint import SinglePointCalculator

    water.calc = SinglePointCalculator(water, energy=-14.0, forces=np.zeros((3, 3)))
    samples = [*_samples(3), labelled_from_atoms(water, "water").with_edges(CUTOFF)]
    torch.manual_seed(0)
    model = NequIPPotential.from_config(tiny_config())
    batch = collate(samples)
    pred = predict_batch(model, batch, forces=True, stress=True)
    assert pred.forces is not None and pred.stress is not None
    for k, s in enumerate(samples):
        g = AtomicGraph.from_structure(s.structure, CUTOFF)
        ref = compute_properties(model, g, stress=True)
        mine = batch.system_idx == k
        assert float(pred.energy[k]) == pytest.approx(float(ref.energy), rel=1e-12)
        torch.testing.assert_close(pred.forces[mine], ref.forces, rtol=1e-10, atol=1e-12)
        if ref.stress is None:
            assert not bool(batch.periodic[k]) and not pred.stress[k].any()
        else:
            torch.testing.assert_close(pred.stress[k], ref.stress, rtol=1e-10, atol=1e-12)
