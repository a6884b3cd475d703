"""Fine-tuning: species subset keeps the energies exactly; shifts refit; SevenNet-0 step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomshard.models.potential import NequIPPotential
from atomshard.models.potential.config import replace
from atomshard.train.batch import collate, predict_batch
from atomshard.train.config import RecipeConfig
from atomshard.train.data import labelled_from_atoms, read_dataset
from atomshard.train.finetune import prepare_finetune, subset_species
from atomshard.train.trainer import train_potential
from tests.train.train_cases import tiny_config, tiny_frames


def _frames():
    return [labelled_from_atoms(a, f"frame {k}") for k, a in enumerate(tiny_frames(4, seed=5))]


def test_species_subset_keeps_energies_and_forces_exactly():
    torch.manual_seed(1)
    three = replace(
        tiny_config(dtype="float64"), species=(1, 6, 8), energy_shift=(-1.0, -2.0, -3.0),
        energy_scale=(0.5, 0.7, 0.9),
    )  # fmt: skip
    big = NequIPPotential.from_config(three)
    cfg, state = subset_species(big, (1, 8))
    assert cfg.species == (1, 8) and cfg.energy_shift == (-1.0, -3.0)
    assert cfg.energy_scale == (0.5, 0.9)
    small = NequIPPotential.from_config(cfg)
    small.load_state_dict(state)
    batch = collate([f.with_edges(cfg.cutoff) for f in _frames()])
    a, b = predict_batch(big, batch), predict_batch(small, batch)
    torch.testing.assert_close(b.energy, a.energy, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(b.forces, a.forces, rtol=1e-12, atol=1e-13)


def test_refit_shifts_remove_the_mean_energy_offset():
    torch.manual_seed(2)
    model = NequIPPotential.from_config(tiny_config(dtype="float64"))
    frames = [f.with_edges(model.cutoff) for f in _frames()]
    cfg, state, delta = prepare_finetune(model, frames, (1, 8), dtype="float64")
    assert delta.shape == (2,)
    tuned = NequIPPotential.from_config(cfg)
    tuned.load_state_dict(state)
    pred = predict_batch(tuned, collate(frames), forces=False).energy.numpy()
    residual = np.array([f.energy for f in frames]) - pred
    counts = np.array([[np.sum(f.structure.species == z) for z in (1, 8)] for f in frames])
    # least squares: the residual is orthogonal to every composition column
    np.testing.assert_allclose(counts.T @ residual, 0, atol=1e-8)


@pytest.mark.slow
@pytest.mark.needs_shared_data
def test_sevennet0_finetune_step_on_hfo2(tmp_path):
    from atomshard.models.resolve import resolve_model
    from tests.conftest import shared_data

    frames = read_dataset(shared_data("sevennet_hfo2", "hfo2.extxyz"))
    source = resolve_model("sevennet-0", dtype=torch.float64)
    assert isinstance(source, NequIPPotential) and len(source.config.species) > 80
    frames = [f.with_edges(source.cutoff) for f in frames]
    cfg, state, _ = prepare_finetune(source, frames, (8, 72), dtype="float32")
    assert cfg.species == (8, 72)
    recipe = RecipeConfig(batch_size=2, max_epochs=1, lr=1e-4, progress=False, plots=False)
    result = train_potential(cfg, frames, [], recipe, tmp_path, init_state=state)
    row = result.history[0]
    # the shift refit leaves a small energy error (the SevenNet-0 reference differs by
    # ~19 eV/atom from this DFT set before the refit)
    assert row["val_energy_rmse"] < 0.05 and row["val_force_rmse"] < 0.5
