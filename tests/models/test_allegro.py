"""The Allegro potential: physics properties (the shipped kit), ZBL at short range, mixed
precision, bad input, presets, checkpoints, ``--model`` strings, the ASE calculator and the
``eval``/``convert``/``train`` commands."""

from __future__ import annotations

import math

import ase
import numpy as np
import pytest
import torch

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.models.allegro import PRESETS, AllegroConfig, AllegroPotential, preset
from atomshard.models.base import compute_properties
from atomshard.models.checkpoint import load_model, save_checkpoint
from atomshard.testing import PotentialPropertyTests, default_structures


def small_config(**overrides) -> AllegroConfig:
    base = dict(
        species=(8, 14), cutoff=3.5, l_max=2, n_layers=2, n_scalar=8, n_tensor=4,
        embed_dim=8, two_body_hidden=(16,), allegro_hidden=(16,), readout_hidden=(8,),
        avg_num_neighbors=6.0, energy_shift=(-2.0, -4.0), energy_scale=(0.8, 1.2),
        dtype="float64",
    )  # fmt: skip
    base.update(overrides)
    return AllegroConfig(**base)


def small_model(seed: int = 0, **overrides) -> AllegroPotential:
    torch.manual_seed(seed)
    return AllegroPotential(small_config(**overrides)).eval()


def _props(model, atoms):
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    return compute_properties(model, graph, forces=True, stress=bool(atoms.pbc.all()))


class TestAllegroProperties(PotentialPropertyTests):
    """Rotation, reflection, permutation, translation, wrapping, finite-difference forces
    and stress, smoothness at the cutoff, far-apart fragments."""

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls) -> AllegroPotential:
        return small_model()

    @pytest.fixture(scope="class")
    @classmethod
    def property_structures(cls) -> list:
        return default_structures((8, 14), n_atoms=6)


def test_track_irreps_reach_odd_and_even_with_three_layers():
    model = small_model(n_layers=3)
    middle = {str(ir) for _, ir in model.track_irreps[1]}
    assert {"0e", "1o", "1e", "2e"} <= middle  # full O(3): both parities in the track
    assert str(model.track_irreps[-1]) == "1x0e"


def _zbl_reference(r: float, z1: int, z2: int) -> float:
    """LAMMPS' universal ZBL pair energy (eV) without switching."""
    a = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / a
    phi = (0.18175 * math.exp(-3.19980 * x) + 0.50986 * math.exp(-0.94229 * x)
           + 0.28022 * math.exp(-0.40290 * x) + 0.02817 * math.exp(-0.20162 * x))  # fmt: skip
    return 14.399645 * z1 * z2 / r * phi


def test_zbl_dimer_at_0p3_angstrom_is_strongly_repulsive_and_finite():
    model = small_model()
    far = ase.Atoms("SiO", positions=[[0, 0, 0], [10.0, 0, 0]])
    close = ase.Atoms("SiO", positions=[[0, 0, 0], [0.3, 0, 0]])
    e_far, p = float(_props(model, far).energy), _props(model, close)
    forces = p.forces.numpy()
    assert np.isfinite(float(p.energy)) and np.isfinite(forces).all()
    assert float(p.energy) - e_far > 100.0  # eV
    assert forces[0, 0] < -100.0 < 100.0 < forces[1, 0]  # pushed apart


def test_zbl_term_is_the_standard_formula_times_the_cutoff():
    model = small_model()
    with torch.no_grad():  # silence the network: E = shifts + ZBL
        model.readout.weights[-1].zero_()
    for r in (0.3, 1.0, 2.0):
        atoms = ase.Atoms("SiO", positions=[[0, 0, 0], [r, 0, 0]])
        x = r / model.cutoff
        f = 1 - 28 * x**6 + 48 * x**7 - 21 * x**8
        want = -2.0 - 4.0 + _zbl_reference(r, 14, 8) * f
        assert float(_props(model, atoms).energy) == pytest.approx(want, rel=1e-12)
    no_zbl = small_model(zbl=False)
    with torch.no_grad():
        no_zbl.readout.weights[-1].zero_()
    atoms = ase.Atoms("SiO", positions=[[0, 0, 0], [0.3, 0, 0]])
    assert float(_props(no_zbl, atoms).energy) == pytest.approx(-6.0, abs=1e-12)


def test_mixed_precision_body_float32_geometry_float64():
    exact = small_model(seed=3)
    mixed = AllegroPotential(small_config(dtype="float32"))
    mixed.load_state_dict(exact.state_dict())
    assert mixed.readout.weights[0].dtype == torch.float32
    atoms = default_structures((8, 14), n_atoms=8)[0]
    p64, p32 = _props(exact, atoms), _props(mixed, atoms)
    assert p32.energy.dtype == torch.float64 and p32.forces.dtype == torch.float64
    assert float(p32.energy) == pytest.approx(float(p64.energy), rel=1e-5)
    np.testing.assert_allclose(p32.forces.numpy(), p64.forces.numpy(), atol=1e-4)
    half = AllegroPotential(small_config(dtype="bfloat16"))
    half.load_state_dict(exact.state_dict())
    ph = _props(half, atoms)
    assert np.isfinite(ph.forces.numpy()).all()
    assert float(ph.energy) == pytest.approx(float(p64.energy), rel=5e-2)


def test_isolated_atoms_get_their_shift_and_zero_force():
    model = small_model()
    atoms = ase.Atoms("OSi", positions=[[0, 0, 0], [20.0, 0, 0]])
    p = _props(model, atoms)
    np.testing.assert_allclose(p.energies.numpy(), [-2.0, -4.0])
    assert np.abs(p.forces.numpy()).max() == 0.0


def test_bad_input_is_one_line():
    model = small_model()
    with pytest.raises(InputError, match=r"atom 1 is H \(Z=1\), which this model does not know"):
        _props(model, ase.Atoms("OH", positions=[[0, 0, 0], [1, 0, 0]]))
    with pytest.raises(InputError, match="apart"):
        _props(model, ase.Atoms("OSi", positions=[[0, 0, 0], [0, 0, 1e-6]]))
    for field, value in [("cutoff", -1.0), ("l_max", 9), ("embed_dim", 7), ("dtype", "int8"),
                         ("energy_scale", (1.0, 2.0, 3.0)), ("allegro_activation", "relu"),
                         ("species", (8, 8))]:  # fmt: skip
        with pytest.raises(InputError, match=f"AllegroConfig.{field}="):
            small_config(**{field: value})


def test_presets_follow_the_seed():
    small = preset("allegro-small", species=(1, 8))
    assert (small.n_layers, small.n_scalar, small.n_tensor, small.l_max) == (2, 64, 64, 2)
    assert small.allegro_hidden == (256, 256) and small.cutoff == 6.0 and small.zbl
    assert small.two_body_hidden == (64, 64) and small.embed_dim == 32
    assert small.scalar_embed_dim == 128 and small.readout_hidden == (128,)
    assert small.readout_activation is None and small.n_bessel == 8 and small.cutoff_p == 6
    assert preset("allegro-medium", species=(1,)).l_max == 3
    large = preset("allegro-large", species=(1,))
    assert (large.n_layers, large.n_scalar, large.n_tensor, large.l_max) == (3, 128, 128, 3)
    assert large.allegro_hidden == (512, 512, 512)
    assert sorted(PRESETS) == ["allegro-large", "allegro-medium", "allegro-small"]
    with pytest.raises(InputError, match="unknown Allegro preset"):
        preset("allegro-huge", species=(1,))


def test_checkpoint_resolve_and_calculator(tmp_path):
    from atomshard.md.calculator import AtomshardCalculator
    from atomshard.models.resolve import resolve_model

    model = small_model(seed=2)
    path = tmp_path / "allegro.pt"
    save_checkpoint(path, model, model_type="allegro", config=model.config)
    atoms = default_structures((8, 14), n_atoms=6)[0]
    ref = _props(model, atoms)
    for loaded in (load_model(path), resolve_model(str(path)), resolve_model(f"allegro:{path}")):
        assert isinstance(loaded, AllegroPotential)
        assert float(_props(loaded, atoms).energy) == float(ref.energy)
    atoms.calc = AtomshardCalculator(f"allegro:{path}")
    assert atoms.get_potential_energy() == pytest.approx(float(ref.energy), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), ref.forces.numpy(), atol=1e-10)
    with pytest.raises(InputError, match="no such file"):
        resolve_model(f"allegro:{tmp_path / 'missing.ckpt'}")


def test_eval_command(tmp_path, capsys):
    import ase.io

    from atomshard.cli import main

    model = small_model(seed=2)
    path = tmp_path / "allegro.pt"
    save_checkpoint(path, model, model_type="allegro", config=model.config)
    frames = tmp_path / "frames.xyz"
    ase.io.write(frames, default_structures((8, 14), n_atoms=6)[:2])
    assert main(["eval", "--model", str(path), "--structure", str(frames)]) == 0
    assert capsys.readouterr().out.strip()


def test_train_allegro_from_a_preset_then_load(tmp_path, capsys):
    import yaml

    from atomshard.cli import main
    from atomshard.models.checkpoint import read_checkpoint
    from tests.train.train_cases import write_tiny

    data = write_tiny(tmp_path / "set.xyz", 6, seed=4)
    spec = {
        "model": {"kind": "allegro", "preset": "allegro-small", "cutoff": 2.5, "n_scalar": 8,
                  "n_tensor": 4, "l_max": 1, "embed_dim": 8, "two_body_hidden": [8],
                  "two_body_out": 8, "allegro_hidden": [8], "readout_hidden": [8]},
        "data": {"train": str(data), "valid_fraction": 0.5},
        "training": {"batch_size": 2, "max_epochs": 2, "progress": False, "lr": 0.01,
                     "threads": 1, "precision": "float64", "plots": False},
        "output": str(tmp_path / "run"),
    }  # fmt: skip
    path = tmp_path / "allegro.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["train", str(path)]) == 0
    best = tmp_path / "run" / "best.pt"
    ckpt = read_checkpoint(best)
    assert ckpt["model_type"] == "allegro"
    assert ckpt["config"]["n_layers"] == 2 and ckpt["config"]["zbl"] is True
    assert ckpt["config"]["avg_num_neighbors"][0] > 0  # fitted from the data
    model = load_model(best)
    assert isinstance(model, AllegroPotential)
    atoms = default_structures((1, 8), n_atoms=5)[0]
    assert np.isfinite(float(_props(model, atoms).energy))


@pytest.mark.parametrize("indexed", [False, True], ids=["per-edge", "gathered"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "few-pairs"])
def test_channel_bilinear_gradients_and_second_derivatives(monkeypatch, sparse, indexed):
    from atomshard.models.allegro import layers

    monkeypatch.setattr(layers, "BLOCK_VALUES", 40)  # several edge blocks
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(7, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    index = torch.tensor([2, 0, 2, 1, 3, 3, 0]) if indexed else None
    b = torch.randn(4 if indexed else 7, 3, 2, dtype=torch.float64, generator=gen)
    b.requires_grad_(True)
    w = torch.randn(3, 4, 2, 5, dtype=torch.float64, generator=gen)
    if sparse:  # only (i, j) = (0, 1) and (2, 0) coupled
        mask = torch.zeros(4, 2, dtype=torch.float64)
        mask[0, 1] = mask[2, 0] = 1.0
        w = w * mask[None, :, :, None]
    w.requires_grad_(True)
    rows = b if index is None else b[index]
    want = torch.einsum("uijk,eui,euj->euk", w, a, rows)
    got = layers.channel_bilinear(a, b, w, index)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)

    def fn(a, b, w):
        return layers.channel_bilinear(a, b, w, index)

    assert torch.autograd.gradcheck(fn, (a, b, w))
    assert torch.autograd.gradgradcheck(fn, (a, b, w))


def test_bench_allegro_large_smoke(tmp_path):
    """The million-atom benchmark's path on 81 atoms: three blocks give the whole graph's
    energy and forces (float64)."""
    import json

    from tests.bench_scripts import load_benchmark

    load_benchmark("bench_allegro_large").main(["--smoke", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "allegro_large.json").read_text())
    assert report["n_atoms"] == 81 and report["n_blocks"] == 3 and report["finite"]
    assert report["check_energy_rel"] <= 1e-12 and report["check_force_max_abs"] <= 1e-10
