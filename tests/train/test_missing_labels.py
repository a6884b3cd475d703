"""Frames without an energy (or without forces): read, fitted and trained on what they have.

The energy term of the loss and the energy errors count only the frames with an energy
(``Batch.energy_mask``, ``Counts.n_energy``); the per-species shifts are fitted on them;
a run says which frames lack an energy; a frame with no label at all is an error.
"""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np
import pytest
import torch

from atomshard.errors import InputError
from atomshard.models.potential import NequIPPotential
from atomshard.train.batch import collate, predict_batch
from atomshard.train.config import RecipeConfig
from atomshard.train.data import LabelledStructure, labelled_from_atoms, read_dataset
from atomshard.train.loss import Counts, LossWeights, batch_loss, error_sums, summarise
from atomshard.train.statistics import compute_statistics, fit_energy_shifts
from atomshard.train.trainer import train_potential
from tests.train.train_cases import tiny_config, tiny_frames

RECIPE = dict(batch_size=3, lr=0.01, max_epochs=2, progress=False, plots=False)


def _frames(n: int = 6, *, seed: int = 7, no_energy=(1, 2, 4)) -> list[LabelledStructure]:
    frames = [
        labelled_from_atoms(a, f"set.xyz, frame {k}")
        for k, a in enumerate(tiny_frames(n, seed=seed))
    ]
    return [dataclasses.replace(f, energy=None) if k in no_energy else f
            for k, f in enumerate(frames)]  # fmt: skip


def _model() -> NequIPPotential:
    torch.manual_seed(0)
    return NequIPPotential.from_config(tiny_config())


def _loss_and_grad(model, samples, counted, weights):
    """Loss of ``samples`` normalised by the counts of ``counted``, and its gradient."""
    model.zero_grad(set_to_none=True)
    batch = collate([s.with_edges(model.cutoff) for s in samples])
    pred = predict_batch(model, batch, forces=True, create_graph=True)
    loss = batch_loss(pred, batch, Counts.of(counted), weights)
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return loss.detach(), grad


def test_energy_term_counts_only_frames_with_an_energy():
    frames = _frames()
    with_e = [f for f in frames if f.energy is not None]
    model = _model()
    energy_only = LossWeights(1.0, 0.0, 0.0)
    loss, grad = _loss_and_grad(model, frames, frames, energy_only)
    ref_loss, ref_grad = _loss_and_grad(model, with_e, with_e, energy_only)
    # direct: mean over the 3 energy frames of ((E_pred - E_ref) / N)^2, one by one
    direct = 0.0
    for f in with_e:
        pred = predict_batch(model, collate([f.with_edges(model.cutoff)]), forces=False)
        direct += ((float(pred.energy[0]) - f.energy) / f.n_atoms) ** 2
    assert math.isfinite(float(loss)) and float(loss) > 0
    assert float(loss) == pytest.approx(direct / 3, rel=1e-12)
    assert float(ref_loss) == pytest.approx(float(loss), rel=1e-12)
    np.testing.assert_allclose(grad.numpy(), ref_grad.numpy(), rtol=1e-10, atol=1e-14)
    # the force term still counts every frame (all have forces)
    _, grad_f = _loss_and_grad(model, frames, frames, LossWeights(0.0, 1.0, 0.0))
    full = [dataclasses.replace(f, energy=0.0) for f in frames]
    _, ref_f = _loss_and_grad(model, full, full, LossWeights(0.0, 1.0, 0.0))
    np.testing.assert_allclose(grad_f.numpy(), ref_f.numpy(), rtol=1e-10, atol=1e-14)
    # error sums: 3 energies, every force component
    batch = collate([f.with_edges(model.cutoff) for f in frames])
    with torch.enable_grad():
        sums = error_sums(predict_batch(model, batch, forces=True), batch)
    assert float(sums[0]) == 3 and float(sums[3]) == 3 * sum(f.n_atoms for f in frames)


def test_a_batch_without_energies_gives_zero_energy_term_and_no_nan():
    frames = _frames(no_energy=range(6))
    model = _model()
    loss, grad = _loss_and_grad(model, frames[:2], frames, LossWeights(1.0, 0.0, 0.0))
    assert float(loss) == 0.0 and bool(torch.all(grad == 0))
    loss, grad = _loss_and_grad(model, frames[:2], frames, LossWeights(1.0, 1.0, 0.0))
    assert math.isfinite(float(loss)) and float(loss) > 0 and bool(torch.isfinite(grad).all())
    batch = collate([f.with_edges(model.cutoff) for f in frames[:2]])
    with torch.enable_grad():
        errors = summarise(error_sums(predict_batch(model, batch, forces=True), batch))
    assert math.isnan(errors["energy_mae"]) and errors["force_mae"] > 0


def test_shifts_are_fitted_on_the_frames_with_an_energy():
    frames = [f.with_edges(2.5) for f in _frames()]
    with_e = [f for f in frames if f.energy is not None]
    with pytest.warns(UserWarning, match=r"energy shifts fitted on the 3 of 6 training frames"):
        stats = compute_statistics(frames, (1, 8))
    expected = fit_energy_shifts(with_e, (1, 8), residual=None)
    np.testing.assert_allclose(stats.energy_shift, expected, rtol=1e-12)
    assert stats.n_energy == 3 and stats.n_structures == 6
    # a residual's entries of frames without an energy are not read
    residual = np.array([f.energy if f.energy is not None else np.nan for f in frames])
    np.testing.assert_allclose(
        fit_energy_shifts(frames, (1, 8), residual=residual), expected, rtol=1e-12
    )
    none = [dataclasses.replace(f, energy=None) for f in frames]
    with pytest.warns(UserWarning, match=r"none of the 6 training frames .*shifts are not fitted"):
        stats = compute_statistics(none, (1, 8))
    assert stats.energy_shift == (0.0, 0.0) and stats.n_energy == 0


def test_training_with_half_the_energies_says_which_frames(tmp_path):
    frames = _frames()
    recipe = RecipeConfig(**RECIPE)
    with pytest.warns(UserWarning) as caught:
        result = train_potential(tiny_config(dtype="float32"), frames, frames[:3], recipe,
                                 tmp_path)  # fmt: skip
    notes = [str(w.message) for w in caught]
    want = ("3 of 6 training frames have no reference energy (set.xyz, frame 1, set.xyz, "
            "frame 2, set.xyz, frame 4): they enter the force (and stress) terms only")  # fmt: skip
    assert notes.count(want) == 1, notes
    assert result.epochs_run == 2
    for row in result.history:
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
        assert math.isfinite(row["val_energy_mae"]) and math.isfinite(row["val_force_mae"])


def test_no_energy_at_all_trains_forces_only_and_reports_no_energy_error(tmp_path):
    frames = _frames(no_energy=range(6))
    recipe = RecipeConfig(**RECIPE)
    with pytest.warns(UserWarning, match=r"none of the 6 training frames has a reference energy"):
        result = train_potential(tiny_config(dtype="float32"), frames, frames[:2], recipe,
                                 tmp_path)  # fmt: skip
    for row in result.history:
        assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
        assert math.isfinite(row["val_force_rmse"]) and "val_energy_mae" not in row
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["val_energy_mae"] for r in rows] == ["", ""]
    assert all(r["val_force_mae"] not in ("", "nan") for r in rows)
    # ... but with nothing else weighted there is nothing to train on
    forces_off = RecipeConfig(**{**RECIPE, "force_weight": 0.0})
    with pytest.raises(InputError, match=r"training stage 1: no loss term has data \(weights "
                       r"energy=1.0, force=0.0, stress=0.0; labels in the 6 training frames: "
                       r"force, stress\)"):  # fmt: skip
        train_potential(tiny_config(dtype="float32"), frames, [], forces_off, tmp_path / "x")


def test_readers_keep_frames_without_an_energy(tmp_path):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = tiny_frames(3, seed=8)
    forces = atoms[1].get_forces()
    atoms[1].calc = SinglePointCalculator(atoms[1], forces=forces)
    path = tmp_path / "part.xyz"
    ase.io.write(str(path), atoms, format="extxyz")
    got = read_dataset(path)
    assert [g.energy is None for g in got] == [False, True, False]
    np.testing.assert_allclose(got[1].forces, forces, atol=1e-8)  # extxyz writes 8 digits
    # n2p2: a structure without an 'energy' line keeps its forces
    data = tmp_path / "input.data"
    cell = "lattice 5 0 0\nlattice 0 5 0\nlattice 0 0 5\n"
    data.write_text(
        f"begin\n{cell}atom 0 0 0 H 0 0 0.1 0 0\natom 1 0 0 H 0 0 -0.1 0 0\nenergy -1\nend\n"
        f"begin\n{cell}atom 0 0 0 H 0 0 0.2 0 0\natom 1.1 0 0 H 0 0 -0.2 0 0\nend\n"
    )
    got = read_dataset(data, length_unit="angstrom", energy_unit="ev")
    assert got[0].energy == -1.0 and got[1].energy is None
    np.testing.assert_allclose(got[1].forces[:, 0], [0.2, -0.2])


def test_stress_only_validation_still_picks_a_best_model(tmp_path):
    """Validation frames with a stress but no energy or forces: early stopping and best.pt
    follow the validation stress RMSE (they followed an inf before, so best.pt was never
    written and the end-of-run report failed on it)."""
    from atomshard.train.trainer import early_stop_metric

    assert early_stop_metric({"val_energy_rmse": 2.0, "val_force_rmse": 4.0}) == 3.0
    assert early_stop_metric({"val_stress_rmse": 0.5, "val_loss": 9.0}) == 0.5
    assert early_stop_metric({"val_loss": 9.0}) == 9.0
    assert early_stop_metric({}) == math.inf
    frames = _frames(no_energy=())
    valid = [dataclasses.replace(f, energy=None, forces=None) for f in frames[:2]]
    assert all(v.stress is not None for v in valid)
    recipe = RecipeConfig(**{**RECIPE, "stress_weight": 1.0})
    result = train_potential(tiny_config(dtype="float32"), frames, valid, recipe, tmp_path)
    assert result.epochs_run == 2 and (tmp_path / "best.pt").is_file()
    assert all(math.isfinite(row["val_stress_rmse"]) for row in result.history)
