"""Physics properties of BPNNPotential: symmetries, derivatives, NVE, precision, modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.io.n2p2_data import read_n2p2_data
from atomshard.models import compute_properties
from atomshard.models.bpnn import BPNNPotential, activation, load_n2p2_potential
from atomshard.testing import (
    PotentialPropertyTests,
    check_forces_finite_difference,
    check_stress_finite_difference,
    random_structure,
)
from tests.conftest import shared_data
from tests.models.bpnn_synthetic import write_synthetic_potential


class TestCu2SProperties(PotentialPropertyTests):
    """The full property kit on a real potential (types 2, 3, 9; poly2 cutoff)."""

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls) -> BPNNPotential:
        return load_n2p2_potential(shared_data("n2p2", "Cu2S_PBE"))

    @pytest.fixture(scope="class")
    @classmethod
    def property_structures(cls) -> list:
        # Cu-S bonds are ~2.3 Å: keep random atoms out of the steep repulsive region
        return [
            random_structure((16, 29), 5, periodic=True, min_distance=2.1, seed=1),
            random_structure((16, 29), 4, periodic=False, min_distance=2.1, seed=2),
            random_structure((16, 29), 3, periodic=False, min_distance=2.1, seed=3),
        ]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> BPNNPotential:
    folder = write_synthetic_potential(tmp_path_factory.mktemp("synthetic"))
    return load_n2p2_potential(folder)


def test_synthetic_all_types_derivatives(synthetic: BPNNPotential) -> None:
    atoms = random_structure((1, 8), 7, periodic=True, min_distance=1.0, seed=3)
    check_forces_finite_difference(synthetic, atoms, n_components=8, atol=1e-6)
    check_stress_finite_difference(synthetic, atoms, atol=1e-6)


@pytest.mark.parametrize("cutoff_type", ["1 0.2", "2", "3", "4 0.1", "5", "7 0.3", "8"])
def test_cutoff_types_forces(tmp_path, cutoff_type: str) -> None:
    model = load_n2p2_potential(write_synthetic_potential(tmp_path, cutoff_type=cutoff_type))
    atoms = random_structure((1, 8), 5, periodic=False, min_distance=1.0, seed=4)
    check_forces_finite_difference(model, atoms, n_components=4, atol=1e-6)


def test_backward_modes_agree(tmp_path) -> None:
    folder = write_synthetic_potential(tmp_path)
    atoms = random_structure((1, 8), 8, periodic=True, min_distance=1.0, seed=5)
    results = []
    for mode in ("store", "recompute", "explicit"):
        model = load_n2p2_potential(folder, backward=mode)
        model.block_pairs = 50  # several blocks
        graph = AtomicGraph.from_ase(atoms, model.cutoff)
        results.append(compute_properties(model, graph))
    a = results[0]
    for b in results[1:]:
        assert a.forces is not None and b.forces is not None
        assert a.stress is not None and b.stress is not None
        torch.testing.assert_close(a.energy, b.energy, rtol=1e-14, atol=0)
        torch.testing.assert_close(a.forces, b.forces, rtol=0, atol=1e-12)
        torch.testing.assert_close(a.stress, b.stress, rtol=0, atol=1e-12)


def test_block_size_does_not_change_results(synthetic: BPNNPotential) -> None:
    atoms = random_structure((1, 8), 9, periodic=True, min_distance=1.0, seed=6)
    graph = AtomicGraph.from_ase(atoms, synthetic.cutoff)
    one = compute_properties(synthetic, graph)
    saved = synthetic.block_pairs
    try:
        synthetic.block_pairs = 1
        many = compute_properties(synthetic, graph)
    finally:
        synthetic.block_pairs = saved
    torch.testing.assert_close(one.energies, many.energies, rtol=0, atol=1e-12)
    assert one.forces is not None and many.forces is not None
    torch.testing.assert_close(one.forces, many.forces, rtol=0, atol=1e-12)


def test_explicit_backward_matches_reference_forces() -> None:
    folder = shared_data("n2p2", "Cu2S_PBE")
    ref = json.loads((folder / "reference_prediction.json").read_text())
    model = load_n2p2_potential(folder, backward="explicit")
    atoms = read_n2p2_data(folder / "input.data")[0]
    out = compute_properties(model, AtomicGraph.from_ase(atoms, model.cutoff), stress=False)
    assert out.forces is not None
    assert (
        float((out.forces - torch.tensor(ref["forces"], dtype=torch.float64)).abs().max()) <= 1e-8
    )


def test_float32_close_to_float64(tmp_path) -> None:
    folder = write_synthetic_potential(tmp_path)
    atoms = random_structure((1, 8), 8, periodic=True, min_distance=1.0, seed=7)
    out = {}
    for dtype in (torch.float32, torch.float64):
        model = load_n2p2_potential(folder, dtype=dtype)
        out[dtype] = compute_properties(model, AtomicGraph.from_ase(atoms, model.cutoff))
    e32, e64 = float(out[torch.float32].energy), float(out[torch.float64].energy)
    assert abs(e32 - e64) <= 1e-5 * max(1.0, abs(e64))
    f32, f64 = out[torch.float32].forces, out[torch.float64].forces
    assert f32 is not None and f64 is not None
    assert float((f32 - f64).abs().max()) <= 1e-4


def test_activations_match_n2p2_formulas() -> None:
    x = torch.linspace(-40.0, 40.0, 161, dtype=torch.float64)
    n = x.numpy()
    want = {
        "l": n, "t": np.tanh(n), "s": 1 / (1 + np.exp(-n)), "r": np.maximum(n, 0),
        "p": np.where(n > 35, n, np.log1p(np.exp(np.minimum(n, 35)))),
        "g": np.exp(-0.5 * n * n), "c": np.cos(n), "S": 1 - 1 / (1 + np.exp(-n)),
        "e": np.exp(-n), "h": n * n,
    }  # fmt: skip
    for letter, values in want.items():
        np.testing.assert_allclose(activation(x, letter).numpy(), values, rtol=1e-14, atol=0)


def test_unknown_species_is_an_input_error(synthetic: BPNNPotential) -> None:
    atoms = random_structure((1, 6), 4, periodic=False, min_distance=1.0)
    graph = AtomicGraph.from_ase(atoms, synthetic.cutoff)
    with pytest.raises(InputError, match="C \\(Z=6\\)"):
        compute_properties(synthetic, graph)


def test_water_nve_conserves_energy() -> None:
    """Velocity Verlet on 8 water molecules cut from the n2p2 box (H2O_RPBE-D3)."""
    from ase import Atoms
    from ase.units import fs

    folder = shared_data("n2p2", "H2O_RPBE-D3")
    model = load_n2p2_potential(folder)
    box = read_n2p2_data(folder / "input.data")[0]
    centre = box.positions[0]
    d = box.get_distances(0, np.arange(0, len(box), 3), mic=True)
    oxygens = np.arange(0, len(box), 3)[np.argsort(d)[:8]]
    idx = np.concatenate([[o, o + 1, o + 2] for o in oxygens])
    shift = box.get_distances(0, idx, mic=True, vector=True) + centre - box.positions[idx]
    atoms = Atoms(box.numbers[idx], positions=box.positions[idx] + shift)
    masses = atoms.get_masses()[:, None]
    rng = np.random.default_rng(0)
    kt = 300 * 8.617333262e-5
    vel = rng.normal(size=(len(atoms), 3)) * np.sqrt(kt / masses)  # Å sqrt(eV/amu)
    vel -= (masses * vel).sum(0) / masses.sum()

    def energy_forces(pos: np.ndarray) -> tuple[float, np.ndarray]:
        a = atoms.copy()
        a.positions = pos
        out = compute_properties(model, AtomicGraph.from_ase(a, model.cutoff), stress=False)
        assert out.forces is not None
        return float(out.energy), out.forces.numpy()

    def fluctuation(dt: float, n_steps: int) -> float:
        pos, v = atoms.positions.copy(), vel.copy()
        e, f = energy_forces(pos)
        totals = [e + 0.5 * float((masses * v**2).sum())]
        for _ in range(n_steps):
            v = v + 0.5 * dt * f / masses
            pos = pos + dt * v
            e, f = energy_forces(pos)
            v = v + 0.5 * dt * f / masses
            totals.append(e + 0.5 * float((masses * v**2).sum()))
        return max(totals) - min(totals)

    coarse = fluctuation(0.5 * fs, 16)  # 8 fs
    fine = fluctuation(0.25 * fs, 32)
    # exact forces: velocity-Verlet energy error ~ dt^2 (ratio 4); wrong forces: no decay
    assert coarse < 5e-3, f"total-energy fluctuation {coarse:.2e} eV over 8 fs at dt = 0.5 fs"
    assert coarse / fine > 3.0, f"fluctuation {coarse:.2e} (0.5 fs) vs {fine:.2e} (0.25 fs)"
