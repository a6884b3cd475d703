"""The ``atomshard`` program: subcommands run, bad input gives one-line errors and exit 2."""

from __future__ import annotations

import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase.lattice.cubic import FaceCenteredCubic

from atomshard.cli import main
from atomshard.models.checkpoint import load_model, save_checkpoint
from atomshard.models.pair import LennardJones


@pytest.fixture
def lj_checkpoint(tmp_path):
    model = LennardJones(cutoff=7.0)
    path = tmp_path / "lj.pt"
    save_checkpoint(path, model, model_type="lennard-jones", config=model.config)
    return path


@pytest.fixture
def argon_file(tmp_path):
    frames = []
    for seed in range(3):
        atoms = FaceCenteredCubic("Ar", latticeconstant=5.26, size=(2, 2, 2))
        atoms.rattle(0.05, seed=seed)
        frames.append(atoms)
    path = tmp_path / "argon.extxyz"
    ase.io.write(path, frames)
    return path


def test_checkpoint_round_trip(lj_checkpoint):
    model = load_model(lj_checkpoint)
    assert isinstance(model, LennardJones) and model.cutoff == 7.0


def test_eval_writes_extxyz(tmp_path, lj_checkpoint, argon_file, capsys):
    out = tmp_path / "out.extxyz"
    rc = main(
        [
            "eval",
            "--model",
            str(lj_checkpoint),
            "--structure",
            str(argon_file),
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    frames = ase.io.read(out, index=":")
    header = out.read_text().splitlines()[1]
    assert "energies:R:1" in header and "forces:R:3" in header and "stress=" in header
    assert len(frames) == 3
    for atoms in frames:
        assert atoms.get_potential_energies().shape == (32,)
        assert np.isclose(atoms.get_potential_energies().sum(), atoms.get_potential_energy())
        assert atoms.get_forces().shape == (32, 3)
        assert atoms.get_stress().shape == (6,)
    printed = capsys.readouterr().out
    assert "3 frame(s), 96 atoms" in printed


def test_md_cli_runs_and_resumes(tmp_path, lj_checkpoint, argon_file):
    out = tmp_path / "run"
    base = [
        "md",
        "--model",
        str(lj_checkpoint),
        "--structure",
        str(argon_file),
        "--dt",
        "4",
        "--temperature",
        "50",
        "--output",
        str(out),
        "--no-progress",
        "--restart-every",
        "5",
        "--traj-every",
        "5",
    ]
    assert main([*base, "--steps", "10"]) == 0
    assert main([*base, "--steps", "20", "--resume"]) == 0
    assert len(ase.io.read(out / "trajectory.extxyz", index=":")) == 5
    assert (out / "thermo.png").exists() and (out / "config.yaml").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--model", "MODEL", "--structure", "missing.xyz"], "does not exist"),
        (["eval", "--model", "nonexistent.pt", "--structure", "ARGON"], "no such checkpoint"),
        (["eval", "--model", "CORRUPT", "--structure", "ARGON"], "corrupt"),
        (["eval", "--model", "MODEL", "--structure", "GARBAGE"], "could not read"),
        (["eval", "--model", "MODEL", "--structure", "NAN"], "non-finite"),
        (["eval", "--model", "MODEL", "--structure", "CLOSE"], "apart"),
        (["eval", "--model", "MODEL", "--structure", "NEON"], "does not know"),
        (["md", "--model", "MODEL", "--structure", "ARGON", "--dt", "0"], "timestep"),
        (["md", "--model", "MODEL", "--structure", "ARGON", "--steps", "-3"], "steps"),
        (
            ["eval", "--model", "MODEL", "--structure", "ARGON", "--block-atoms", "many"],
            "block atoms must be a number of atoms or 'auto'",
        ),
        (
            ["eval", "--model", "MODEL", "--structure", "ARGON", "--block-atoms", "5"],
            "no split of 32 atoms into blocks of at most 5 atoms",
        ),
        (
            ["md", "--model", "MODEL", "--structure", "ARGON", "--block-atoms", "0"],
            "block_atoms = 0: must be >= 1 atom",
        ),
        (
            ["md", "--model", "MODEL", "--structure", "ARGON", "--block-atoms", "some"],
            "block_atoms = 'some'",
        ),
    ],
)
def test_bad_input_one_line_error(tmp_path, lj_checkpoint, argon_file, capsys, argv, message):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "garbage.xyz").write_text("3\nnot really\nH 0 0\n")
    (tmp_path / "nan.xyz").write_text("2\n\nAr 0 0 0\nAr nan 0 0\n")
    (tmp_path / "close.xyz").write_text("2\n\nAr 0 0 0\nAr 0.01 0 0\n")
    (tmp_path / "neon.xyz").write_text("2\n\nAr 0 0 0\nNe 3.5 0 0\n")
    subst = {
        "MODEL": str(lj_checkpoint),
        "ARGON": str(argon_file),
        "CORRUPT": str(tmp_path / "corrupt.pt"),
        "GARBAGE": str(tmp_path / "garbage.xyz"),
        "NAN": str(tmp_path / "nan.xyz"),
        "CLOSE": str(tmp_path / "close.xyz"),
        "NEON": str(tmp_path / "neon.xyz"),
    }
    argv = [subst.get(a, a) for a in argv]
    if argv[0] == "md":
        argv += ["--output", str(tmp_path / "md-out"), "--no-progress"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "md-out" / "thermo.csv").exists()


def test_console_script_help():
    done = subprocess.run(
        [sys.executable, "-m", "atomshard", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "md" in done.stdout and "eval" in done.stdout
