"""Our converted SevenNet checkpoints against sevenn's own model (the reference).

Float64 (sevenn's model cast to float64): energy <= 1e-6 eV/atom, forces <= 1e-5 eV/Å,
stress <= 1e-6 eV/Å³ — measured figures are ~1e-15, ~1e-14 and ~1e-11. Float32 (our
float32 body vs sevenn's calculator as shipped) agrees to float32 round-off.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomshard.errors import CheckpointError, InputError
from atomshard.models.checkpoint import load_model, read_checkpoint
from atomshard.models.potential import NequIPPotential
from atomshard.models.potential.sevennet import (
    convert_sevennet_checkpoint,
    find_sevennet_checkpoint,
)
from atomshard.testing import evaluate

sevenn = pytest.importorskip("sevenn", reason="sevenn (atomshard[sevennet]) is not installed")

from atomshard.testing.sevennet_reference import (  # noqa: E402
    SevenNetReference,
    parity_structures,
)
from tests.models.sevennet_cases import small_sevenn_checkpoint  # noqa: E402

STRUCTURES = parity_structures()


@pytest.fixture(scope="module")
def sevennet0(tmp_path_factory):
    source = find_sevennet_checkpoint("SevenNet-0")
    target = convert_sevennet_checkpoint(source, tmp_path_factory.mktemp("s0") / "s0.pt")
    return source, target


@pytest.fixture(scope="module")
def pair64(sevennet0):
    source, target = sevennet0
    return load_model(target, dtype=torch.float64), SevenNetReference(source, dtype=torch.float64)


def _compare(ours, ref, n_atoms):
    return {
        "energy_per_atom": abs(ours.energy - ref.energy) / n_atoms,
        "energies": float(np.abs(ours.energies - ref.energies).max()),
        "forces": float(np.abs(ours.forces - ref.forces).max()),
        "stress": (
            float(np.abs(ours.stress - ref.stress).max())
            if ours.stress is not None and ref.stress is not None
            else 0.0
        ),
    }


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_float64_parity_with_sevenn(pair64, name):
    model, reference = pair64
    atoms = STRUCTURES[name]
    ours, ref = evaluate(model, atoms), reference(atoms)
    assert (ours.stress is None) == (not atoms.pbc.all())
    err = _compare(ours, ref, len(atoms))
    assert err["energy_per_atom"] <= 1e-6, err
    assert err["energies"] <= 1e-6, err
    assert err["forces"] <= 1e-5, err
    assert err["stress"] <= 1e-6, err


def test_float32_agrees_with_sevenn_calculator(sevennet0):
    source, target = sevennet0
    name = "triclinic-SiO2"
    ours32 = load_model(target)  # float32 body, as converted
    assert ours32.body_dtype == torch.float32
    atoms = STRUCTURES[name]
    err = _compare(
        evaluate(ours32, atoms), SevenNetReference(source, dtype=torch.float32)(atoms), len(atoms)
    )
    # float32 round-off of a 5-layer, 128-channel model (measured ~4e-7 and ~1e-5)
    assert err["energy_per_atom"] <= 5e-6, err
    assert err["forces"] <= 1e-4, err


def test_converted_checkpoint_describes_itself(sevennet0):
    _, target = sevennet0
    data = read_checkpoint(target)
    assert data["model_type"] == "potential"
    meta = data["metadata"]
    assert meta["sevennet_model"] == "SevenNet_0__11Jul2024" and meta["cutoff"] == 5.0
    assert {"Si", "O", "Hf"} <= set(meta["chemical_species"]) and len(
        meta["chemical_species"]
    ) == 89
    cfg = data["config"]
    assert cfg["cutoff_kind"] == "xplor" and cfg["parity"] is False and cfg["n_layers"] == 5


@pytest.mark.slow
def test_l3i5_converts_and_matches(tmp_path):
    source = find_sevennet_checkpoint("7net-l3i5")
    model = load_model(
        convert_sevennet_checkpoint(source, tmp_path / "l3i5.pt"), dtype=torch.float64
    )
    assert isinstance(model, NequIPPotential) and model.config.l_max == 3
    atoms = STRUCTURES["triclinic-SiO2"]
    err = _compare(evaluate(model, atoms), SevenNetReference(source)(atoms), len(atoms))
    assert err["energy_per_atom"] <= 1e-6 and err["forces"] <= 1e-5, err


@pytest.mark.parametrize(
    "name",
    [
        "SevenNet-0",
        "7net-0",
        "sevennet_0",
        "SevenNet-0_11July2024",
        "SevenNet-0_22May2024",
        "SevenNet-l3i5",
    ],
)
def test_find_by_name(name):
    path = find_sevennet_checkpoint(name)
    assert path.is_file() and path.suffix == ".pth"


def test_find_errors(monkeypatch, tmp_path):
    with pytest.raises(InputError, match="unknown SevenNet model name"):
        find_sevennet_checkpoint("SevenNet-42")
    with pytest.raises(InputError, match="no such file"):
        find_sevennet_checkpoint(tmp_path / "missing.pth")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="sevenn package is not installed"):
        find_sevennet_checkpoint("SevenNet-0")


class _NotAllowed:
    pass


def test_convert_refuses_unsafe_or_foreign_files(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"config": {"x": _NotAllowed()}, "model_state_dict": {}}, evil)
    with pytest.raises(CheckpointError, match="not a readable SevenNet checkpoint"):
        convert_sevennet_checkpoint(evil, tmp_path / "out.pt")
    foreign = tmp_path / "foreign.pth"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a SevenNet checkpoint"):
        convert_sevennet_checkpoint(foreign, tmp_path / "out.pt")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable"):
        convert_sevennet_checkpoint(garbage, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_current_layout_with_parity_and_species_self_connection(tmp_path):
    source = small_sevenn_checkpoint(tmp_path / "small.pth")
    model = load_model(
        convert_sevennet_checkpoint(source, tmp_path / "small.pt"), dtype=torch.float64
    )
    assert model.config.parity and model.config.self_connection == "species"
    assert model.config.cutoff_kind == "polynomial" and model.config.cutoff_p == 5
    reference = SevenNetReference(source)
    for name in ("quartz", "triclinic-SiO2"):
        atoms = STRUCTURES[name]
        err = _compare(evaluate(model, atoms), reference(atoms), len(atoms))
        assert err["energy_per_atom"] <= 1e-10 and err["forces"] <= 1e-9, (name, err)
        assert err["stress"] <= 1e-9, (name, err)
