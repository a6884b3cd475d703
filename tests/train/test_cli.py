"""``atomshard train`` (potential branch) and ``atomshard evaluate`` end to end."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from atomshard.cli import main
from atomshard.models.checkpoint import read_checkpoint
from tests.train.train_cases import tiny_model, write_tiny


def _yaml(tmp_path, name, **training):
    data = tmp_path / "set.xyz"
    if not data.exists():
        write_tiny(data, 6, seed=4)
    spec = {
        "model": tiny_model(),
        "data": {"train": str(data), "valid_fraction": 0.5},
        "training": {"batch_size": 2, "max_epochs": 2, "progress": False, "lr": 0.01,
                     "threads": 1, **training},
        "output": str(tmp_path / name),
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
@pytest.mark.distributed
def test_train_serial_and_two_ranks_agree_then_evaluate(tmp_path, capsys):
    serial = _yaml(tmp_path, "serial", precision="float64")
    assert main(["train", str(serial)]) == 0
    out = capsys.readouterr().out
    assert "training on 3 structures, validating on 3" in out and "best.pt on the valid set" in out
    for name in ("best.pt", "last.pt", "metrics.csv", "learning_curve.png", "parity_valid.png"):
        assert (tmp_path / "serial" / name).is_file(), name
    meta = read_checkpoint(tmp_path / "serial" / "best.pt")["metadata"]
    assert meta["statistics"]["n_structures"] == 3 and meta["n_valid"] == 3

    two = _yaml(tmp_path, "two", precision="float64", ranks=2, plots=False)
    assert main(["train", str(two)]) == 0
    a = read_checkpoint(tmp_path / "serial" / "last.pt")["training"]
    b = read_checkpoint(tmp_path / "two" / "last.pt")["training"]
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=1e-9, atol=1e-11, msg=name)
    # 3 validation frames over 2 ranks: each counted once, so the metrics agree too
    for key in ("train_loss", "val_loss", "val_energy_mae", "val_force_rmse"):
        got = [row[key] for row in b["state"]["history"]]
        want = [row[key] for row in a["state"]["history"]]
        assert got == pytest.approx(want, rel=1e-9), key

    report = tmp_path / "errors.json"
    args = ["errors", "--model", str(tmp_path / "serial" / "best.pt"),
            "--data", str(tmp_path / "set.xyz"), "--json", str(report)]  # fmt: skip
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "energy" in table and "meV/Å" in table and "stress" in table
    errors = json.loads(report.read_text())
    assert errors["n_frames"] == 6 and errors["force_rmse"] > 0


def test_bad_configs_are_reported(tmp_path, capsys):
    good = yaml.safe_load(_yaml(tmp_path, "x").read_text())
    cases = [
        ({**good, "extra": 1}, "unknown top-level key"),
        ({**good, "training": {"precision": "bf16"}}, "training.precision='bf16'"),
        ({**good, "training": {"lr": -1}}, "training.lr=-1"),
        ({**good, "data": {"train": str(tmp_path / "missing.xyz")}}, "does not exist"),
        ({**good, "model": {"kind": "potential", "init": "sevennet-0", "channels": 4}},
         "takes no other keys"),
        ({**good, "model": {**good["model"], "channels": 0}}, "NequIPConfig.channels=0"),
    ]  # fmt: skip
    for k, (spec, message) in enumerate(cases):
        path = tmp_path / f"bad{k}.yaml"
        path.write_text(yaml.safe_dump(spec))
        assert main(["train", str(path)]) == 2
        assert message in capsys.readouterr().err, message
    assert main(["errors", "--model", "nothing.pt", "--data", "x.xyz"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
