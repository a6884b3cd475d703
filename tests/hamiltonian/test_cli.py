"""The Hamiltonian subcommands: ``data pyscf``, ``train``, ``predict``."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomshard.cli import main


def test_data_pyscf_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pyscf")
    out = tmp_path / "set"
    assert main(["data", "pyscf", "H2", "--out", str(out), "--n-configs", "2"]) == 0
    assert sorted(p.name for p in out.glob("*.h5")) == ["00000.h5", "00001.h5"]
    assert "2 written" in capsys.readouterr().out
    assert main(["data", "pyscf", "missing.xyz", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
