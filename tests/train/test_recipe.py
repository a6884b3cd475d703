"""The recipe's pieces (lr warm-up and cosine schedule, alone and in a run) and the
one-line notes on data a run cannot use in full (no forces, NaN labels, a batch larger
than the data, a resume on changed data)."""

from __future__ import annotations

import math

import pytest

from atomshard.errors import InputError
from atomshard.train.config import RecipeConfig
from atomshard.train.data import labelled_from_atoms
from atomshard.train.trainer import scheduled_lr, train_potential
from tests.train.train_cases import tiny_config, tiny_frames


def test_scheduled_lr_warmup_then_plateau_or_cosine():
    plateau = RecipeConfig(lr=0.01, warmup_epochs=4, max_epochs=10)
    assert [scheduled_lr(plateau, 1, e) for e in range(4)] == pytest.approx(
        [0.0025, 0.005, 0.0075, 0.01]
    )
    assert scheduled_lr(plateau, 1, 4) is None  # ReduceLROnPlateau from here
    cosine = RecipeConfig(lr=0.01, warmup_epochs=2, max_epochs=10, lr_schedule="cosine",
                          min_lr=1e-4, stage2_epochs=4, stage2_lr=0.001)  # fmt: skip
    assert scheduled_lr(cosine, 1, 2) == pytest.approx(0.01)
    half = 1e-4 + 0.5 * (0.01 - 1e-4) * (1 + math.cos(math.pi * 3 / 8))
    assert scheduled_lr(cosine, 1, 5) == pytest.approx(half)
    assert scheduled_lr(cosine, 1, 10) == pytest.approx(1e-4)
    # stage 2: no warm-up, its own lr and length
    assert scheduled_lr(cosine, 2, 0) == pytest.approx(0.001)
    assert scheduled_lr(cosine, 2, 2) == pytest.approx(1e-4 + 0.5 * (0.001 - 1e-4))


def test_schedule_settings_are_checked():
    with pytest.raises(InputError, match=r"training.lr_schedule='step'"):
        RecipeConfig(lr_schedule="step")
    with pytest.raises(InputError, match=r"training.warmup_epochs=5: must be below max_epochs"):
        RecipeConfig(warmup_epochs=5, max_epochs=5)
    with pytest.raises(InputError, match=r"training.warmup_epochs=-1"):
        RecipeConfig(warmup_epochs=-1)


def test_run_follows_the_schedule(tmp_path):
    frames = [labelled_from_atoms(a, f"frame {k}") for k, a in enumerate(tiny_frames(4, seed=2))]
    recipe = RecipeConfig(batch_size=2, lr=0.01, max_epochs=4, warmup_epochs=2,
                          lr_schedule="cosine", min_lr=0.001, stage2_epochs=2,
                          stage2_lr=0.002, progress=False, plots=False)  # fmt: skip
    result = train_potential(tiny_config(dtype="float32"), frames[:3], frames[3:], recipe,
                             tmp_path)  # fmt: skip
    lrs = [row["lr"] for row in result.history]
    stages = [row["stage"] for row in result.history]
    assert stages == [1, 1, 1, 1, 2, 2]
    expected = [scheduled_lr(recipe, 1, e) for e in range(4)]
    expected += [scheduled_lr(recipe, 2, e) for e in range(2)]
    assert lrs == pytest.approx(expected)
    assert lrs[:2] == pytest.approx([0.005, 0.01])


def _frames(n: int, seed: int):
    return [labelled_from_atoms(a, f"frame {k}") for k, a in enumerate(tiny_frames(n, seed=seed))]


def test_frames_without_forces_and_a_large_batch_are_named(tmp_path):
    import dataclasses

    frames = _frames(3, seed=4)
    frames[1] = dataclasses.replace(frames[1], forces=None)
    recipe = RecipeConfig(batch_size=8, max_epochs=1, progress=False, plots=False)
    with pytest.warns(UserWarning) as caught:
        result = train_potential(tiny_config(dtype="float32"), frames, [], recipe, tmp_path)
    notes = [str(w.message) for w in caught]
    assert any("1 of 3 training frames have no forces (frame 1)" in n for n in notes), notes
    assert any("batch_size=8 is larger than the 3 training frames" in n for n in notes), notes
    assert result.epochs_run == 1 and math.isfinite(result.history[0]["train_loss"])


def test_nan_labels_are_refused_naming_the_frame():
    import numpy as np
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = tiny_frames(1, seed=5)[0]
    forces = np.zeros((len(atoms), 3))
    forces[2, 1] = np.nan
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=forces)
    with pytest.raises(InputError, match=r"^water\.xyz, frame 7: force on atom 2 is not finite"):
        labelled_from_atoms(atoms, "water.xyz, frame 7")
    atoms.calc = SinglePointCalculator(atoms, energy=float("nan"))
    with pytest.raises(InputError, match=r"^water\.xyz, frame 7: energy is not finite \(nan\)"):
        labelled_from_atoms(atoms, "water.xyz, frame 7")


def test_resume_on_changed_data_warns(tmp_path):
    frames = _frames(4, seed=6)
    recipe = RecipeConfig(batch_size=2, max_epochs=3, progress=False, plots=False)
    config = tiny_config(dtype="float32")
    train_potential(config, frames[:3], [], recipe, tmp_path, stop_after_epochs=1)
    with pytest.warns(UserWarning, match=r"resuming .*last\.pt: the training data differ"):
        result = train_potential(config, frames[1:], [], recipe, tmp_path)
    assert result.epochs_run == 3
