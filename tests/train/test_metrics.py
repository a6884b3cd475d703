"""The one metrics path (CSV + learning curves) and training-state layout every trainer uses."""

from __future__ import annotations

import math

import torch

from atomshard.train.ema import WeightAverage
from atomshard.train.metrics import (
    HAMILTONIAN_PANELS,
    POTENTIAL_PANELS,
    plot_learning_curves,
    read_metrics,
    write_metrics,
)
from atomshard.train.resume import restore_training, training_payload


def test_metrics_csv_round_trip_and_rewrite(tmp_path):
    path = tmp_path / "metrics.csv"
    rows = [{"epoch": 1, "lr": 0.01, "train_loss": 2.0}, {"epoch": 2, "lr": 0.01}]
    write_metrics(path, rows, ["epoch", "lr", "train_loss"])
    got = read_metrics(path)
    assert got[0] == {"epoch": 1.0, "lr": 0.01, "train_loss": 2.0}
    assert got[1]["epoch"] == 2.0 and math.isnan(got[1]["train_loss"])
    # rewritten whole from the history (a resumed run never duplicates rows)
    write_metrics(path, rows[:1], ["epoch", "lr", "train_loss"])
    assert len(read_metrics(path)) == 1
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temporary left behind


def test_learning_curves_for_both_trainers(tmp_path):
    pot = [
        {"epoch": e, "stage": 1 + (e > 3), "lr": 1e-3, "train_loss": 1 / e, "val_loss": 2 / e,
         "val_force_rmse": 0.1 / e, "val_energy_rmse": 0.01 / e}
        for e in range(1, 6)
    ]  # fmt: skip
    ham = [
        {"epoch": e, "lr": 1e-2, "train_mae": 0.01 / e, "val_mae": 0.02 / e,
         "val_mae_node": 0.03 / e, "val_mae_edge": 0.01 / e}
        for e in range(1, 6)
    ]  # fmt: skip
    plot_learning_curves(pot, tmp_path / "pot.png", POTENTIAL_PANELS)
    plot_learning_curves(ham, tmp_path / "ham.png", HAMILTONIAN_PANELS)
    for name in ("pot.png", "ham.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_payload_restores_every_part():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = WeightAverage(model, 0.9)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    for _ in range(3):
        opt.zero_grad()
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        ema.update(model)
        sched.step(1.0)
    payload = training_payload(
        model=model, ema=ema, optimizer=opt, scheduler=sched, state={"epoch": 3, "history": []}
    )
    fresh = torch.nn.Linear(3, 2)
    ema2 = WeightAverage(fresh, 0.9)
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, patience=0)
    state = restore_training(payload, model=fresh, ema=ema2, optimizer=opt2, scheduler=sched2)
    assert state == {"epoch": 3, "history": []}
    assert torch.equal(fresh.weight, model.weight)
    assert ema2.updates == 3 and torch.equal(ema2.shadow["weight"], ema.shadow["weight"])
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] < 0.1  # plateau cut it
    assert sched2.state_dict() == sched.state_dict()
