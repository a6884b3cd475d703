"""Parity with the reference implementation: the same randomly initialised model in
``nequip-allegro`` 0.8 and in atomshard (through the converter) gives the same energy,
per-atom energies, forces and stress to float64 round-off, on periodic, triclinic, slab
and molecule-in-vacuum structures, with and without path-channel coupling, parity and
ZBL. Both see the same edges (our neighbour list fed to nequip), so the comparison is of
the models alone.
"""

from __future__ import annotations

import ase
import numpy as np
import pytest
import torch

pytest.importorskip(
    "allegro", reason="nequip-allegro is not installed (pip install 'atomshard[allegro-reference]')"
)

from atomshard.graph import AtomicGraph
from atomshard.models.allegro import AllegroPotential
from atomshard.models.allegro.convert import (
    allegro_config_and_weights,
    convert_allegro_model,
    nequip_global_state,
)
from atomshard.models.base import compute_properties
from atomshard.models.checkpoint import load_model
from tests.distributed.distributed_cases import quartz, slab, tiny_triclinic

TOL = 1e-12  # relative, float64


@pytest.fixture(scope="module", autouse=True)
def _nequip_state():
    """nequip's global settings (float64 default dtype, seeds, ...) for this module only:
    the tests after it must not inherit them."""
    with nequip_global_state():
        yield


def _reference(
    *,
    coupling: bool = True,
    parity: bool = True,
    zbl: bool = True,
    seed: int = 1,
    type_names: tuple[str, str] = ("O", "Si"),
):
    from allegro.model import AllegroModel

    kwargs = {}
    if zbl:
        kwargs["pair_potential"] = {
            "_target_": "nequip.nn.pair_potential.ZBL",
            "units": "metal",
            "chemical_species": ["O", "Si"],
        }
    model = AllegroModel(
        seed=seed,
        model_dtype="float64",
        r_max=3.6,
        type_names=list(type_names),
        l_max=2,
        parity=parity,
        radial_chemical_embed={
            "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
            "num_bessels": 8,
            "bessel_trainable": False,
            "polynomial_cutoff_p": 6,
        },
        radial_chemical_embed_dim=16,
        scalar_embed_mlp_hidden_layers_depth=2,
        scalar_embed_mlp_hidden_layers_width=32,
        num_layers=3,
        num_scalar_features=16,
        num_tensor_features=8,
        allegro_mlp_hidden_layers_depth=2,
        allegro_mlp_hidden_layers_width=32,
        tp_path_channel_coupling=coupling,
        readout_mlp_hidden_layers_depth=1,
        readout_mlp_hidden_layers_width=16,
        readout_mlp_nonlinearity=None,
        avg_num_neighbors=dict(zip(type_names, (9.0, 12.5))),
        per_type_energy_scales=dict(zip(type_names, (1.3, 0.7))),
        per_type_energy_shifts=dict(zip(type_names, (-3.1, -5.2))),
        **kwargs,
    )
    return model.eval()


def _molecule() -> ase.Atoms:
    """A small SiO molecule-like cluster in vacuum (no cell)."""
    pos = [[0.0, 0.0, 0.0], [1.62, 0.1, 0.0], [-0.5, 1.5, 0.2], [0.3, -0.4, 1.55], [2.4, 1.2, 0.9]]
    return ase.Atoms("SiOOOSi", positions=pos)


STRUCTURES = {
    "periodic": lambda: quartz((1, 1, 1), seed=3),
    "triclinic": tiny_triclinic,
    "slab": slab,
    "molecule": _molecule,
}


def _nequip_eval(model, graph: AtomicGraph, atoms: ase.Atoms) -> dict:
    """Energy, per-atom energies, forces and stress from nequip on our edges."""
    type_of = {8: 0, 14: 1}
    data = {
        "pos": graph.positions.clone(),
        "edge_index": torch.stack([graph.dst, graph.src]),
        "edge_cell_shift": graph.shifts.to(torch.float64),
        "cell": graph.cell.clone().reshape(1, 3, 3),
        "pbc": graph.pbc.clone().reshape(1, 3),
        "atom_types": torch.tensor([type_of[int(z)] for z in graph.species]),
        "batch": torch.zeros(graph.n_atoms, dtype=torch.int64),
        "num_atoms": torch.tensor([graph.n_atoms]),
    }
    out = model(data)
    stress = out.get("stress")
    return {
        "energy": float(out["total_energy"].detach().reshape(())),
        "energies": out["atomic_energy"].detach().reshape(-1).numpy(),
        "forces": out["forces"].detach().numpy(),
        "stress": None
        if stress is None or not atoms.pbc.all()
        else stress.detach().reshape(3, 3).numpy(),
    }


def _ours(model, graph: AtomicGraph, atoms: ase.Atoms) -> dict:
    p = compute_properties(model, graph, forces=True, stress=bool(atoms.pbc.all()))
    return {
        "energy": float(p.energy),
        "energies": p.energies.numpy(),
        "forces": p.forces.numpy(),
        "stress": None if p.stress is None else p.stress.numpy(),
    }


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.fixture(scope="module")
def reference():
    return _reference()


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("allegro") / "converted.pt"
    convert_allegro_model(reference, path)
    return load_model(path, dtype=torch.float64)


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_parity_with_nequip_allegro(reference, converted, name):
    atoms = STRUCTURES[name]()
    graph = AtomicGraph.from_ase(atoms, converted.cutoff)
    assert graph.src.numel() > 0
    ref = _nequip_eval(reference, graph, atoms)
    ours = _ours(converted, graph, atoms)
    assert np.abs(ref["forces"]).max() > 1e-2, "a test with zero forces cannot fail"
    assert _rel(ours["energy"], ref["energy"]) <= TOL, (name, ours["energy"], ref["energy"])
    assert _rel(ours["energies"], ref["energies"]) <= TOL, name
    assert _rel(ours["forces"], ref["forces"]) <= TOL, name
    if atoms.pbc.all():
        assert ref["stress"] is not None and ours["stress"] is not None
        assert _rel(ours["stress"], ref["stress"]) <= TOL, name


@pytest.mark.parametrize(
    "options", [{"coupling": False}, {"parity": False}, {"zbl": False}], ids=str
)
def test_parity_variants(options):
    reference = _reference(seed=5, **options)
    config, state = allegro_config_and_weights(reference)
    model = AllegroPotential(config)
    model.load_state_dict(state)
    atoms = tiny_triclinic()
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    ref, ours = _nequip_eval(reference, graph, atoms), _ours(model, graph, atoms)
    for key in ("energies", "forces", "stress"):
        assert _rel(ours[key], ref[key]) <= TOL, (options, key)


def _write_nequip_checkpoint(path) -> None:
    """A nequip training checkpoint (``.ckpt``) of a small random model with nequip's
    defaults (SiLU readout, one hidden two-body layer), as ``nequip-train`` writes it."""
    import lightning
    from nequip.train import NequIPLightningModule
    from nequip.utils import get_current_code_versions

    model = {
        "_target_": "allegro.model.AllegroModel",
        "seed": 3,
        "model_dtype": "float64",
        "r_max": 3.6,
        "type_names": ["O", "Si"],
        "l_max": 1,
        "radial_chemical_embed": {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed"},
        "radial_chemical_embed_dim": 8,
        "num_layers": 2,
        "num_scalar_features": 8,
        "num_tensor_features": 4,
        "allegro_mlp_hidden_layers_width": 8,
        "readout_mlp_hidden_layers_width": 8,
        "avg_num_neighbors": 9.0,
        "per_type_energy_shifts": {"O": -1.0, "Si": -2.0},
        "pair_potential": {
            "_target_": "nequip.nn.pair_potential.ZBL",
            "units": "metal",
            "chemical_species": ["O", "Si"],
        },
    }
    info = {
        "versions": get_current_code_versions(verbose=False),
        "training_module": {"_target_": "nequip.train.NequIPLightningModule"},
    }
    module = NequIPLightningModule(
        model=model, num_datasets={"train": 1, "val": 1, "test": 0}, info_dict=info
    )
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )


def test_convert_command_and_model_string_from_a_nequip_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ATOMSHARD_CACHE", str(tmp_path / "cache"))
    from atomshard.cli import main
    from atomshard.models.allegro.convert import load_nequip_model
    from atomshard.models.resolve import resolve_model

    source = tmp_path / "allegro.ckpt"
    _write_nequip_checkpoint(source)
    target = tmp_path / "converted.pt"
    assert main(["convert", "allegro", str(source), "-o", str(target)]) == 0
    assert "model_type allegro" in capsys.readouterr().out
    reference = load_nequip_model(source).eval()
    atoms = quartz((1, 1, 1), seed=4)
    for model in (load_model(target), resolve_model(f"allegro:{source}")):
        graph = AtomicGraph.from_ase(atoms, model.cutoff)
        ref, ours = _nequip_eval(reference, graph, atoms), _ours(model, graph, atoms)
        for key in ("energy", "energies", "forces", "stress"):
            assert _rel(ours[key], ref[key]) <= TOL, key
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["convert", "allegro", str(bad), "-o", str(tmp_path / "x.pt")]) == 2
    assert "not a nequip checkpoint" in capsys.readouterr().err


def test_bench_allegro_smoke(tmp_path):
    import json

    from tests.bench_scripts import load_benchmark

    assert load_benchmark("bench_allegro").main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "allegro.json").read_text())["rows"]
    assert {r["impl"] for r in rows} == {"atomshard", "nequip-allegro"}
    assert all("error" not in r and r["atom_steps_per_s"] > 0 for r in rows), rows
    energies = [r["energy_ev"] for r in rows]  # same weights, same box
    assert energies[0] == pytest.approx(energies[1], rel=1e-5)


def test_type_names_that_are_not_elements_need_species():
    from atomshard.errors import InputError

    reference = _reference(zbl=False, type_names=("oxygen", "silicon"))
    with pytest.raises(InputError, match=r"type names \['oxygen', 'silicon'\] are not chemical"):
        allegro_config_and_weights(reference)
    config, _ = allegro_config_and_weights(reference, species=(8, 14))
    assert config.species == (8, 14) and not config.zbl
