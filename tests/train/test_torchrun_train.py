"""``torchrun -m atomshard train``: the world comes from the environment variables."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from atomshard.cli import main
from atomshard.models.checkpoint import read_checkpoint
from tests.train.train_cases import tiny_model, write_tiny

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, name: str, **training) -> Path:
    data = tmp_path / "set.xyz"
    if not data.exists():
        write_tiny(data, 5, seed=4)
    spec = {
        "model": tiny_model(),
        "data": {"train": str(data), "valid_fraction": 0.4},
        "training": {"batch_size": 2, "max_epochs": 2, "progress": False, "lr": 0.01,
                     "threads": 1, "precision": "float64", **training},
        "output": str(tmp_path / name),
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_torchrun_training_equals_two_local_ranks(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not installed")
    local = _config(tmp_path, "local", ranks=2, plots=False)
    assert main(["train", str(local)]) == 0
    launched = _config(tmp_path, "torchrun", plots=True)  # ranks: 1 — the world is torchrun's
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "atomshard", "train",
           str(launched)]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT / "src") + ":" + str(ROOT), "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = read_checkpoint(tmp_path / "local" / "last.pt")["training"]
    b = read_checkpoint(tmp_path / "torchrun" / "last.pt")["training"]
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=1e-12, atol=1e-14, msg=name)
    for key in ("train_loss", "val_loss", "val_force_rmse"):
        got = [row[key] for row in b["state"]["history"]]
        assert got == pytest.approx([row[key] for row in a["state"]["history"]], rel=1e-12), key
    # rank 0 alone writes the plots and prints the summary and the error table
    assert (tmp_path / "torchrun" / "learning_curve.png").is_file()
    assert proc.stdout.count("training on 3 structures") == 1, proc.stdout
    assert proc.stdout.count("best validation metric") == 1, proc.stdout
    assert proc.stdout.count("best.pt on the valid set") == 1, proc.stdout
