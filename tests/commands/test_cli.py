"""The ``atomshard`` program: subcommands run, bad input gives one-line errors and exit 2."""

from __future__ import annotations

import subprocess
import sys

import ase.io
import numpy as np
import pytest
from ase.lattice.cubic import FaceCenteredCubic

from atomshard.cli import build_parser, main
from atomshard.commands._common import join_repeat_values, parse_repeat
from atomshard.errors import InputError
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
        (["eval", "--model", "MODEL", "--structure", "ARGON", "--repeat", "2x0x1"], "'2x0x1'"),
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


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["--repeat", "2"], (2, 2, 2)),
        (["--repeat", "2x3x1"], (2, 3, 1)),
        (["--repeat", "2", "3", "1"], (2, 3, 1)),
        (["--repeat", "2 3 1"], (2, 3, 1)),
        (["--repeat", "2,3,1"], (2, 3, 1)),
    ],
)
def test_one_repeat_syntax(argv, want):
    joined = join_repeat_values(["eval", *argv, "--structure", "x.xyz"])
    assert joined[:3] == ["eval", "--repeat", joined[2]] and joined[3:] == ["--structure", "x.xyz"]
    assert parse_repeat(joined[2]) == want


@pytest.mark.parametrize("bad", ["2x2", "0", "2x-1x1", "two", "2 2"])
def test_bad_repeat_names_the_value(bad):
    with pytest.raises(InputError, match=f"--repeat '{bad}'"):
        parse_repeat(bad)


@pytest.mark.parametrize("command", ["eval", "md", "partition", "predict"])
def test_every_repeat_command_takes_every_form(command):
    """``--repeat A B C`` stays one value, so positional arguments after it are kept."""
    required = {
        "eval": ["--model", "m.pt", "--structure", "s.xyz"],
        "md": [],
        "partition": ["s.xyz", "--cutoff", "4", "--parts", "2"],
        "predict": ["--model", "m.pt", "--out", "o"],
    }[command]
    tail = ["in.h5"] if command == "predict" else []
    for form in (["2", "3", "1"], ["2x3x1"]):
        argv = join_repeat_values([command, *required, "--repeat", *form, *tail])
        args = build_parser(argv).parse_args(argv)
        assert parse_repeat(args.repeat) == (2, 3, 1), (command, form)
        if command == "predict":
            assert args.inputs == ["in.h5"]


def test_repeat_forms_give_the_same_supercell(tmp_path, lj_checkpoint, argon_file):
    sizes = []
    for k, form in enumerate((["2", "1", "1"], ["2x1x1"])):
        out = tmp_path / f"out{k}.extxyz"
        argv = ["eval", "--model", str(lj_checkpoint), "--structure", str(argon_file),
                "--index", "0", "--repeat", *form, "--output", str(out)]  # fmt: skip
        assert main(argv) == 0
        sizes.append(len(ase.io.read(out)))
    assert sizes == [64, 64]


@pytest.fixture
def labelled_argon(tmp_path, argon_file):
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = ase.io.read(argon_file, index=":")
    rng = np.random.default_rng(0)
    for atoms in frames:
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(rng.normal()), forces=rng.normal(size=(len(atoms), 3))
        )
    path = tmp_path / "labelled.extxyz"
    ase.io.write(path, frames)
    return path


def test_errors_command_and_its_deprecated_names(tmp_path, lj_checkpoint, labelled_argon, capsys):
    """``errors --dtype float64``, ``evaluate --float64`` (both deprecated) agree exactly."""
    import json

    base = ["--model", str(lj_checkpoint), "--data", str(labelled_argon)]
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    assert main(["errors", *base, "--dtype", "float64", "--json", str(new)]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main(["evaluate", *base, "--float64", "--json", str(old)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "atomshard: 'evaluate' is deprecated, use 'errors'" in err
    assert "atomshard: --float64 is deprecated, use --dtype float64" in err
    assert json.loads(new.read_text()) == json.loads(old.read_text())
    assert json.loads(new.read_text())["n_frames"] == 3


def test_help_lists_errors_and_marks_evaluate_deprecated(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "errors" in out and "deprecated name of 'errors'" in out
