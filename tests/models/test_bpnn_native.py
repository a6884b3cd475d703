"""The fused C++ kernel of BPNNPotential (types 2, 3, 9, 12, 13) against the torch path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.models import compute_properties
from atomshard.models.bpnn import load_n2p2_potential
from atomshard.models.bpnn._native import _power_refs, _rjk_powers, load_kernel
from atomshard.testing import (
    check_forces_finite_difference,
    check_stress_finite_difference,
    random_structure,
)
from tests.models.bpnn_synthetic import NATIVE_SF_LINES, write_synthetic_potential

pytestmark = pytest.mark.skipif(load_kernel() is None, reason="no C++ compiler for the kernel")


def _compare(folder, atoms, dtype=torch.float64, atol=1e-11):
    out = {}
    for kernel in ("torch", "native"):
        model = load_n2p2_potential(folder, dtype=dtype, kernel=kernel)
        assert model.kernel == kernel
        out[kernel] = compute_properties(model, AtomicGraph.from_ase(atoms, model.cutoff))
    a, b = out["torch"], out["native"]
    assert a.forces is not None and b.forces is not None
    assert (a.stress is None) == (b.stress is None)
    assert float(a.forces.abs().max()) > 1e-2, "a test with zero forces cannot fail"
    torch.testing.assert_close(b.energies, a.energies, rtol=0, atol=atol)
    torch.testing.assert_close(b.forces, a.forces, rtol=0, atol=atol)
    if a.stress is not None:  # periodic structures
        torch.testing.assert_close(b.stress, a.stress, rtol=0, atol=atol)


# every cutoff type; small periodic cells, so atoms see several images of each other
@pytest.mark.parametrize(
    "cutoff_type", ["0", "1 0.2", "2", "3", "4 0.1", "5", "6 0.1", "7 0.3", "8"]
)
def test_native_equals_torch(tmp_path, cutoff_type: str) -> None:
    folder = write_synthetic_potential(tmp_path, cutoff_type=cutoff_type, sf_lines=NATIVE_SF_LINES)
    atoms = random_structure((1, 8), 9, periodic=True, min_distance=1.0, seed=11)
    _compare(folder, atoms)


def test_native_float32_close_to_torch_float32(tmp_path) -> None:
    folder = write_synthetic_potential(tmp_path, sf_lines=NATIVE_SF_LINES)
    atoms = random_structure((1, 8), 8, periodic=True, min_distance=1.0, seed=12)
    _compare(folder, atoms, dtype=torch.float32, atol=2e-4)


def test_native_derivatives(tmp_path) -> None:
    folder = write_synthetic_potential(tmp_path, sf_lines=NATIVE_SF_LINES)
    model = load_n2p2_potential(folder, kernel="native")
    atoms = random_structure((1, 8), 7, periodic=True, min_distance=1.0, seed=13)
    check_forces_finite_difference(model, atoms, n_components=8, atol=1e-6)
    check_stress_finite_difference(model, atoms, atol=1e-6)


def test_native_isolated_and_lonely_atoms(tmp_path) -> None:
    """Atoms with no or one neighbour (no pairs) and an empty structure's neighbours."""
    from ase import Atoms

    folder = write_synthetic_potential(tmp_path, sf_lines=NATIVE_SF_LINES)
    atoms = Atoms("OHO", positions=[[0, 0, 0], [1.0, 0, 0], [20.0, 0, 0]])
    _compare(folder, atoms)


def test_kernel_choice_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="kernel must be one of"):
        load_n2p2_potential(write_synthetic_potential(tmp_path / "a"), kernel="fast")
    # types 20-25 are not in the kernel: auto falls back, native refuses
    folder = write_synthetic_potential(tmp_path / "b")
    assert load_n2p2_potential(folder).kernel == "torch"
    with pytest.raises(InputError, match="types 2, 3, 9, 12, 13"):
        load_n2p2_potential(folder, kernel="native")
    native_only = write_synthetic_potential(tmp_path / "c", sf_lines=NATIVE_SF_LINES)
    assert load_n2p2_potential(native_only).kernel == "native"
    # double backward needs the torch graph
    assert load_n2p2_potential(native_only, backward="store").kernel == "torch"


def test_power_refs() -> None:
    """Radial exps as integer powers of an earlier one with the same rs and rc."""
    params = [(0.001, 0.0, 12.0), (0.01, 0.0, 12.0), (0.03, 0.0, 12.0), (0.07, 0.0, 12.0)]
    assert _power_refs(params) == [(-1, 0), (0, 10), (1, 3), (1, 7)]  # smallest power
    other = [(0.1, 0.0, 4.0), (0.2, 0.5, 4.0), (0.2, 0.0, 5.0), (0.25, 0.0, 4.0), (30.0, 0, 4.0)]
    assert _power_refs(other) == [(-1, 0), (-1, 0), (-1, 0), (-1, 0), (-1, 0)]


def test_rjk_powers() -> None:
    assert _rjk_powers([(0.07, 0.0), (0.03, 0.0), (0.01, 0.0)]) == (0.01, 0.0, [7, 3, 1])
    # a shift that differs or a non-integer ratio gets its own exp
    assert _rjk_powers([(0.1, 0.0), (0.2, 0.5)])[2] == [1, -1]
    assert _rjk_powers([(0.1, 0.0), (0.25, 0.0)])[2] == [1, -1]
    assert _rjk_powers([(0.3, 0.0), (0.2, 0.0)])[2] == [-1, 1]
    assert _rjk_powers([]) == (0.0, 0.0, [])


def test_native_model_pickles(tmp_path) -> None:
    """Rank launchers pickle models: the kernel's plan is rebuilt, results unchanged."""
    import pickle

    folder = write_synthetic_potential(tmp_path, sf_lines=NATIVE_SF_LINES)
    model = load_n2p2_potential(folder)
    copy = pickle.loads(pickle.dumps(model))
    atoms = random_structure((1, 8), 5, periodic=True, min_distance=1.0, seed=14)
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    a, b = compute_properties(model, graph), compute_properties(copy, graph)
    assert copy.kernel == "native"
    assert a.forces is not None and b.forces is not None
    torch.testing.assert_close(a.forces, b.forces, rtol=0, atol=0)


def test_positions_path_equals_graph_path(tmp_path) -> None:
    """evaluate_positions (cell list in the kernel, no edge list) == compute_properties,
    with two kernel threads (per-thread force buffers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _positions_path_equals_graph_path(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _positions_path_equals_graph_path(tmp_path) -> None:
    folder = write_synthetic_potential(tmp_path, sf_lines=NATIVE_SF_LINES)
    atoms = random_structure((1, 8), 60, periodic=True, min_distance=1.0, seed=15)
    atoms = atoms.repeat((3, 3, 3))  # cells at least 3 cutoffs wide
    atoms.rattle(0.05, seed=1)
    atoms.set_cell(atoms.cell.array + np.array([[0, 0, 0], [0.7, 0, 0], [0.3, -0.4, 0]]))
    for dtype, atol in ((torch.float64, 1e-11), (torch.float32, 2e-4)):
        model = load_n2p2_potential(folder, dtype=dtype)
        assert min(atoms.cell.cellpar()[:3]) > 3 * model.cutoff
        ref = compute_properties(model, AtomicGraph.from_ase(atoms, model.cutoff))
        out = model.evaluate_positions(atoms.positions, atoms.numbers, atoms.cell.array)
        assert ref.forces is not None and out.forces is not None
        assert ref.stress is not None and out.stress is not None
        torch.testing.assert_close(out.energies, ref.energies, rtol=0, atol=atol)
        torch.testing.assert_close(out.forces, ref.forces, rtol=0, atol=atol)
        torch.testing.assert_close(out.stress, ref.stress, rtol=0, atol=atol / 10)
    small = random_structure((1, 8), 6, periodic=True, min_distance=1.0, seed=16)
    with pytest.raises(InputError, match="3 cutoffs"):
        model.evaluate_positions(small.positions, small.numbers, small.cell.array)
