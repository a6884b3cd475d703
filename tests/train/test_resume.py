"""train.resume: the check both trainers make before resuming from ``last.pt``."""

from __future__ import annotations

import dataclasses

import pytest

from atomshard.errors import CheckpointError
from atomshard.models.checkpoint import save_checkpoint
from atomshard.models.hamiltonian import HamiltonianConfig, HamiltonianModel
from atomshard.train.resume import read_training_checkpoint


def test_training_checkpoint_checked_for_state_and_config(tmp_path):
    cfg = HamiltonianConfig(basis={"Si": "1s1p"}, channels=4, n_layers=1)
    model = HamiltonianModel(cfg)
    kw = {"model_type": "hamiltonian", "config": cfg}
    save_checkpoint(tmp_path / "last.pt", model, extra={"training": {"epoch": 3}}, **kw)
    save_checkpoint(tmp_path / "best.pt", model, **kw)
    assert read_training_checkpoint(tmp_path / "last.pt", cfg)["training"] == {"epoch": 3}
    with pytest.raises(CheckpointError, match="no training state"):
        read_training_checkpoint(tmp_path / "best.pt", cfg)
    other = dataclasses.replace(cfg, channels=8)
    with pytest.raises(CheckpointError, match=r"differs in \['channels'\]"):
        read_training_checkpoint(tmp_path / "last.pt", other)
