"""The training loop: loss decreases, resume is bit-identical, stage 2, limits."""

from __future__ import annotations

import csv

import pytest
import torch

from atomshard.models.checkpoint import load_model, read_checkpoint
from atomshard.train.config import RecipeConfig
from atomshard.train.data import labelled_from_atoms
from atomshard.train.trainer import train_potential
from tests.train.train_cases import tiny_config, tiny_frames

RECIPE = dict(batch_size=2, lr=0.01, max_epochs=4, progress=False, plots=False, ema_decay=0.9)


@pytest.fixture(scope="module")
def frames():
    return [labelled_from_atoms(a, f"frame {k}") for k, a in enumerate(tiny_frames(6, seed=1))]


@pytest.fixture(scope="module")
def straight(frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    result = train_potential(
        tiny_config(dtype="float32"), frames[:4], frames[4:], RecipeConfig(**RECIPE), out
    )
    return out, result


def test_loss_decreases_and_outputs_are_written(straight):
    out, result = straight
    assert result.epochs_run == 4 and result.stop_reason == "max epochs (stage 1)"
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    model = load_model(out / "best.pt")  # the EMA weights, loadable like any checkpoint
    assert model.config.species == (1, 8)
    meta = read_checkpoint(out / "best.pt")["metadata"]
    assert meta["recipe"]["lr"] == 0.01 and "val_force_rmse" in meta["metrics"]


def test_resume_after_interruption_is_bit_identical(straight, frames, tmp_path):
    out, _ = straight
    recipe = RecipeConfig(**RECIPE)
    first = train_potential(
        tiny_config(dtype="float32"), frames[:4], frames[4:], recipe, tmp_path,
        stop_after_epochs=2,
    )  # fmt: skip
    assert first.epochs_run == 2 and first.stop_reason == "stopped by caller"
    resumed = train_potential(
        tiny_config(dtype="float32"), frames[:4], frames[4:], recipe, tmp_path
    )
    assert resumed.epochs_run == 4
    a = read_checkpoint(out / "last.pt")
    b = read_checkpoint(tmp_path / "last.pt")
    for key in ("state_dict",):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), name
    for name, value in a["training"]["model"].items():
        assert torch.equal(value, b["training"]["model"][name]), name
    # repr: NaN (no stress term) compares equal to itself
    strip = lambda h: [repr({k: v for k, v in r.items() if k != "time_s"}) for r in h]  # noqa: E731
    assert strip(a["training"]["state"]["history"]) == strip(b["training"]["state"]["history"])


def test_second_stage_restarts_from_best_with_new_weights(frames, tmp_path):
    recipe = RecipeConfig(**{**RECIPE, "max_epochs": 1, "stage2_epochs": 1, "stage2_lr": 0.001})
    result = train_potential(tiny_config(dtype="float32"), frames[:3], [], recipe, tmp_path)
    assert [r["stage"] for r in result.history] == [1, 2]
    assert result.history[1]["lr"] == 0.001
    # stage-2 loss weights (25:1) make the same errors weigh differently
    row = result.history[1]
    expected = 25 * row["val_energy_rmse"] ** 2 + row["val_force_rmse"] ** 2
    assert row["val_loss"] == pytest.approx(expected, rel=1e-9)


def test_max_time_stops_the_run(frames, tmp_path):
    recipe = RecipeConfig(**{**RECIPE, "max_epochs": 50, "max_time_s": 1e-3})
    result = train_potential(tiny_config(dtype="float32"), frames[:2], [], recipe, tmp_path)
    assert result.epochs_run == 1 and result.stop_reason == "max time"


def test_resume_refuses_a_different_model(straight, frames, tmp_path):
    import shutil

    from atomshard.errors import CheckpointError
    from atomshard.models.potential.config import replace

    out, _ = straight
    shutil.copy(out / "last.pt", tmp_path / "last.pt")
    other = replace(tiny_config(dtype="float32"), channels=4)
    with pytest.raises(
        CheckpointError, match=r"different model config \(differs in \['channels'\]\)"
    ):
        train_potential(other, frames[:4], frames[4:], RecipeConfig(**RECIPE), tmp_path)


def test_sigterm_stops_after_the_step_writes_last_pt_and_resumes(frames, tmp_path, capsys):
    """A scheduler's SIGTERM in epoch 3: the step in progress finishes, last.pt holds the
    two finished epochs (and the weights now), the run says so; the same call resumes and
    runs epoch 3 again in full."""
    import os
    import signal

    from atomshard.train import trainer

    real, calls = trainer.shard_loss, []

    def loss_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # 2 steps per epoch: the first step of epoch 3
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    trainer.shard_loss = loss_then_signal
    try:
        cut = train_potential(
            tiny_config(dtype="float32"), frames[:4], frames[4:], RecipeConfig(**RECIPE), tmp_path
        )
    finally:
        trainer.shard_loss = real
    assert cut.interrupted and cut.epochs_run == 2 and cut.stop_reason == "SIGTERM in epoch 3"
    assert "SIGTERM: stopped in epoch 3" in capsys.readouterr().out
    state = read_checkpoint(tmp_path / "last.pt")["training"]["state"]
    assert state["epoch"] == 2 and len(state["history"]) == 2
    done = train_potential(
        tiny_config(dtype="float32"), frames[:4], frames[4:], RecipeConfig(**RECIPE), tmp_path
    )
    assert not done.interrupted and done.epochs_run == 4
    with open(tmp_path / "metrics.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4]
