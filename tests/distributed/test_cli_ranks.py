"""``atomshard eval --ranks 2``: the same table and extxyz as serial, plus a profile."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest

from atomshard.cli import main
from atomshard.models.checkpoint import save_checkpoint
from tests.distributed.distributed_cases import build_model, quartz, slab

pytestmark = pytest.mark.distributed


def test_eval_ranks_matches_serial(tmp_path, capsys):
    model = build_model("nequip")
    ckpt = tmp_path / "nequip.pt"
    save_checkpoint(ckpt, model, model_type="potential", config=model.config)
    frames = tmp_path / "frames.extxyz"
    ase.io.write(frames, [quartz((2, 1, 1)), slab()])
    common = ["eval", "--model", str(ckpt), "--structure", str(frames), "--threads", "1"]
    assert main([*common, "-o", str(tmp_path / "serial.extxyz")]) == 0
    profile = tmp_path / "profile.json"
    parallel = [*common, "--ranks", "2", "--partition", "grid", "--profile", str(profile)]
    assert main([*parallel, "-o", str(tmp_path / "ranks.extxyz")]) == 0
    printed = capsys.readouterr().out
    assert "send/recv" in printed and "2 frame(s)" in printed
    ser = ase.io.read(tmp_path / "serial.extxyz", index=":")
    par = ase.io.read(tmp_path / "ranks.extxyz", index=":")
    for a, b in zip(ser, par):
        e = a.get_potential_energy()
        assert abs(b.get_potential_energy() - e) <= 1e-10 * abs(e)
        f = a.get_forces()
        assert np.max(np.abs(b.get_forces() - f)) <= 1e-10 * np.max(np.abs(f))
        s = a.get_stress()
        assert np.max(np.abs(b.get_stress() - s)) <= 1e-10 * np.max(np.abs(s))
        assert np.allclose(b.get_potential_energies(), a.get_potential_energies(), rtol=1e-10)
    doc = json.loads(profile.read_text())
    assert doc["world_size"] == 2
    assert [r["rank"] for r in doc["ranks"]] == [0, 1]
    # positions + one exchange per message-passing layer (3)
    assert all(r["forward_exchanges_per_step"] == 4 for r in doc["ranks"])


def test_eval_bad_ranks_is_one_line_error(tmp_path, capsys):
    frames = tmp_path / "q.extxyz"
    ase.io.write(frames, quartz((1, 1, 1)))
    rc = main(["eval", "--model", "sevennet-0", "--structure", str(frames), "--ranks", "0"])
    assert rc == 2
    assert "--ranks must be at least 1" in capsys.readouterr().err


def test_md_ranks_matches_serial(tmp_path, capsys):
    from atomshard.md.outputs import read_thermo

    model = build_model("nequip")
    ckpt = tmp_path / "nequip.pt"
    save_checkpoint(ckpt, model, model_type="potential", config=model.config)
    start = tmp_path / "start.extxyz"
    ase.io.write(start, quartz((2, 1, 1), seed=4))
    common = [
        "md", "--model", str(ckpt), "--structure", str(start), "--ensemble", "nose-hoover",
        "--steps", "20", "--temperature", "900", "--skin", "0.3", "--traj-every", "10",
        "--threads", "1", "--no-progress", "--dtype", "float64",
    ]  # fmt: skip
    assert main([*common, "-o", str(tmp_path / "serial")]) == 0
    assert (
        main([*common, "-o", str(tmp_path / "ranks"), "--ranks", "2", "--partition", "grid"]) == 0
    )
    assert "atom migrations" in capsys.readouterr().out
    ser, par = (
        read_thermo(tmp_path / "serial/thermo.csv"),
        read_thermo(tmp_path / "ranks/thermo.csv"),
    )
    assert len(par["step"]) == len(ser["step"]) == 21
    for column in ("epot_eV", "temperature_K", "conserved_eV", "pressure_GPa"):
        if column in ser:
            assert np.allclose(par[column], ser[column], rtol=1e-9, atol=1e-9), column
    a = ase.io.read(tmp_path / "serial/trajectory.extxyz", index=":")
    b = ase.io.read(tmp_path / "ranks/trajectory.extxyz", index=":")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert np.max(np.abs(x.positions - y.positions)) <= 1e-6
        assert np.max(np.abs(x.get_forces() - y.get_forces())) <= 1e-8
