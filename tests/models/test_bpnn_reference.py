"""BPNNPotential against n2p2's own numbers: regression predictions and unit fixtures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from atomshard.graph import AtomicGraph
from atomshard.io.n2p2 import parse_symfunction
from atomshard.io.n2p2_data import read_n2p2_data
from atomshard.models import compute_properties
from atomshard.models.bpnn import (
    SymmetryPlan,
    block_features,
    cutoff_function,
    load_n2p2_potential,
)
from tests.conftest import shared_data

#: (potential, units of its files) — see ../shared/data/n2p2/README.md.
REFERENCES = [
    ("H2O_RPBE-D3", "bohr", "hartree"),
    ("Cu2S_PBE", "angstrom", "ev"),
    ("DMABN_SCAN", "bohr", "hartree"),
    # 288 atoms with ~185 neighbours each and 368 functions: ~17 CPU-s for energy+forces
    pytest.param("Ethylbenzene_SCAN", "bohr", "hartree", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "length", "energy"), REFERENCES)
def test_reference_prediction(name: str, length: str, energy: str, kernel: str = "auto") -> None:
    folder = shared_data("n2p2", name)
    ref = json.loads((folder / "reference_prediction.json").read_text())
    model = load_n2p2_potential(folder, length_unit=length, energy_unit=energy, kernel=kernel)
    atoms = read_n2p2_data(folder / "input.data", length_unit=length, energy_unit=energy)[0]
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    out = compute_properties(model, graph, stress=False)
    assert out.forces is not None
    # back to the potential's own units, where n2p2's numbers live
    e = float(out.energy) / model.units.energy
    f = out.forces.numpy() / (model.units.energy / model.units.length)
    assert abs(e - ref["energy"]) <= 1e-10 * abs(ref["energy"]), (e, ref["energy"])
    err = np.abs(f - np.asarray(ref["forces"])).max()
    assert err <= 1e-8, f"{name}: max force component error {err:.3e}"


@pytest.mark.parametrize(("name", "length", "energy"), REFERENCES[:2])
def test_reference_prediction_torch_path(name: str, length: str, energy: str) -> None:
    """The torch path too (``auto`` picks the fused kernel for these two)."""
    test_reference_prediction(name, length, energy, kernel="torch")


def test_cutoff_function_values() -> None:
    ref = json.loads(shared_data("n2p2", "unit_reference", "cutoff_function_values.json")
                     .read_text())  # fmt: skip
    for t in range(9):
        r = torch.tensor([ref["r"]], dtype=torch.float64, requires_grad=True)
        f = cutoff_function(r, ref["rc"], t, ref["alpha"])
        df = torch.autograd.grad(f.sum(), r)[0] if f.requires_grad else torch.zeros(1)
        fv = float(f.detach())
        assert abs(fv - ref["f"][t]) <= 2.2e-14, (t, fv, ref["f"][t])  # upstream: 100 eps
        assert abs(float(df) - ref["df"][t]) <= 1e-13, (t, float(df), ref["df"][t])
        beyond = torch.tensor([4.5, 3.0], dtype=torch.float64, requires_grad=True)
        fb = cutoff_function(beyond, ref["rc"], t, ref["alpha"])
        dfb = torch.autograd.grad(fb.sum(), beyond)[0] if fb.requires_grad else fb
        assert fb.abs().max() == 0 and dfb.abs().max() == 0, t


def _fixture_value(fixture: dict, line: str) -> float:
    from ase.data import atomic_numbers

    symbols = fixture["elements_line"].split()
    numbers = sorted(atomic_numbers[s] for s in symbols)
    index = {s: numbers.index(atomic_numbers[s]) for s in symbols}
    sf = parse_symfunction(line.split(), index, "fixture")
    functions: list[list] = [[] for _ in numbers]
    functions[sf.center] = [sf]
    plan = SymmetryPlan(functions, numbers, 2, 0.0, torch.float64)  # CT_TANHU
    pos = np.array([p for _, p in fixture["atoms"]], dtype=float)
    vec = torch.tensor(pos[1:] - pos[0], dtype=torch.float64)
    nbr = torch.tensor([index[s] for s, _ in fixture["atoms"][1:]])
    center = torch.zeros(len(nbr), dtype=torch.int64)
    g = block_features(plan, vec, center, center + index[fixture["atoms"][0][0]], nbr, 1)
    return float(g[0, 0])


def test_symmetry_function_values() -> None:
    ref = json.loads(shared_data("n2p2", "unit_reference", "symmetry_function_values.json")
                     .read_text())  # fmt: skip
    checked = set()
    for name, fixture in ref["fixtures"].items():
        for t, line, want in zip(fixture["types"], fixture["setup_lines"], fixture["values"],
                                 strict=True):  # fmt: skip
            got = _fixture_value(fixture, line)
            assert math.isclose(got, want, rel_tol=0, abs_tol=1e-12), (name, line, got, want)
            checked.add(t)
    assert checked == {2, 3, 9, 12, 13, 20, 21, 22, 23, 24, 25}
