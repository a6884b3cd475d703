"""``atomshard convert`` and ``atomshard info``."""

from __future__ import annotations

import json

import pytest
import torch

from atomshard.cli import main
from atomshard.models.checkpoint import save_checkpoint
from atomshard.models.potential import NequIPConfig, NequIPPotential


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = NequIPConfig(species=(1, 8), channels=4, l_max=1, n_layers=2, radial_hidden=(8,))
    model = NequIPPotential.from_config(cfg)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model, model_type="potential", config=cfg, metadata={"note": "x"})
    return path, sum(p.numel() for p in model.parameters())


def test_info_prints_and_json(tiny_checkpoint, capsys):
    path, n_params = tiny_checkpoint
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model_type  potential" in out and "species     2: H O" in out
    assert f"parameters  {n_params:,}" in out and "note" in out
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_parameters"] == n_params and info["config"]["channels"] == 4


def test_info_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["info", str(bad)]) == 2
    assert main(["info", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and "does not exist" in err and "Traceback" not in err


def test_convert_sevennet_by_name(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sevenn", reason="sevenn (atomshard[sevennet]) is not installed")
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "sevennet", "7net-0"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "SevenNet_0__11Jul2024.atomshard.pt").is_file()
    assert "wrote" in out and "5 layers" in out
    assert main(["convert", "sevennet", "no-such-model", "-o", "x.pt"]) == 2
    assert "unknown SevenNet model name" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
