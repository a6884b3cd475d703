"""FIRE and CG through the one driver, serially: the same minimum, the lattice constant of
an E(V) scan under a cell relaxation, resume, non-convergence and bad input."""

from __future__ import annotations

import importlib.util
import json

import ase.io
import numpy as np
import pytest
import torch
from ase.lattice.cubic import FaceCenteredCubic

from atomshard.cli import main
from atomshard.md import MDConfig, run_md
from atomshard.md.outputs import read_thermo
from atomshard.models.checkpoint import save_checkpoint
from atomshard.models.pair import LennardJones
from atomshard.units import EV_PER_A3_TO_GPA


def _config(tmp_path, name, **kw):
    base = dict(
        structure=str(tmp_path / "start.extxyz"), ensemble="fire", steps=2000, fmax=1e-5,
        traj_every=0, restart_every=0, skin=0.5, output=str(tmp_path / name),
        block_atoms="off",
    )  # fmt: skip
    return MDConfig(**{**base, **kw})


def _final(tmp_path, name):
    """``(positions [n, 3] Å, cell [3, 3] Å, energy eV, step)`` of a run's restart file."""
    data = torch.load(tmp_path / name / "restart.pt", weights_only=True)
    state = data["state"]
    return state["positions"].numpy(), state["cell"].numpy(), data["energy"], data["step"]


def _energy_scan_minimum(lj, pressure_gpa=0.0):
    """Lattice constant minimising E(a) + P V(a) of perfect fcc: a coarse scan finds the
    minimum, a parabola through a fine scan (steps of 0.001 Å) places it."""
    from atomshard.md import SerialForceField, state_from_ase

    p = pressure_gpa / EV_PER_A3_TO_GPA

    def enthalpy(a):
        state = state_from_ase(FaceCenteredCubic("Ar", latticeconstant=a, size=(3, 3, 3)))
        SerialForceField(lj, skin=0.0, block_atoms=None)(state)
        return state.energy + p * abs(np.linalg.det(state.cell.numpy()))

    coarse = np.linspace(5.0, 5.5, 26)
    best = coarse[int(np.argmin([enthalpy(a) for a in coarse]))]
    fine = np.linspace(best - 0.02, best + 0.02, 41)
    values = [enthalpy(a) for a in fine]
    k = int(np.argmin(values))
    near = slice(k - 3, k + 4)
    c2, c1, _ = np.polyfit(fine[near], np.asarray(values)[near], 2)
    return -c1 / (2 * c2)


def test_fire_and_cg_reach_the_same_minimum(tmp_path, argon, lj):
    argon.rattle(0.1, seed=5)
    ase.io.write(tmp_path / "start.extxyz", argon)
    runs = {}
    for ensemble in ("fire", "cg"):
        result = run_md(_config(tmp_path, ensemble, ensemble=ensemble), model=lj, progress=False)
        assert result is not None and result.converged
        runs[ensemble] = _final(tmp_path, ensemble)
        thermo = read_thermo(tmp_path / ensemble / "thermo.csv")
        assert thermo["conserved_eV"][-1] < thermo["conserved_eV"][0] - 0.01  # it went down
    (x_fire, _, e_fire, n_fire), (x_cg, _, e_cg, n_cg) = runs["fire"], runs["cg"]
    assert abs(e_fire - e_cg) < 1e-8
    assert np.max(np.abs(x_fire - x_cg)) < 1e-3
    assert n_cg < n_fire  # CG's line searches take far fewer (longer) iterations


@pytest.mark.parametrize(
    ("ensemble", "cell", "pressure", "strain"),
    [
        ("fire", "iso", 0.0, (1.03, 1.03, 1.03)),
        ("cg", "iso", 0.5, (0.98, 0.98, 0.98)),
        ("fire", "aniso", 0.0, (1.03, 0.98, 1.01)),
        ("cg", "tri", 0.0, (1.02, 0.99, 1.0)),
    ],
)
def test_cell_relaxation_reaches_the_lattice_constant_of_an_energy_scan(
    tmp_path, lj, ensemble, cell, pressure, strain
):
    expected = _energy_scan_minimum(lj, pressure)
    atoms = FaceCenteredCubic("Ar", latticeconstant=5.26, size=(3, 3, 3))
    deform = np.diag(strain)
    if cell == "tri":
        deform[0, 1] = deform[1, 0] = 0.01  # a shear only the triclinic mode can undo
    atoms.set_cell(atoms.cell.array @ deform, scale_atoms=True)
    atoms.rattle(0.03, seed=1)
    ase.io.write(tmp_path / "start.extxyz", atoms)
    config = _config(tmp_path, "relax", ensemble=ensemble, min_cell=cell, pressure=pressure)
    result = run_md(config, model=lj, progress=False)
    assert result is not None and result.converged
    _, relaxed, _, _ = _final(tmp_path, "relax")
    lengths = np.linalg.norm(relaxed, axis=1) / 3  # three conventional cells per axis
    assert np.max(np.abs(lengths - expected)) < 2e-4, (lengths, expected)
    if cell != "iso":  # the shape relaxed too: a cubic cell again (right angles)
        unit = relaxed / np.linalg.norm(relaxed, axis=1)[:, None]
        assert np.max(np.abs(unit @ unit.T - np.eye(3))) < 1e-4
    thermo = read_thermo(tmp_path / "relax" / "thermo.csv")
    assert abs(thermo["pressure_GPa"][-1] - pressure) < 5e-3


@pytest.mark.parametrize("ensemble", ["fire", "cg"])
def test_resume_is_bit_identical(tmp_path, argon, lj, ensemble):
    argon.rattle(0.1, seed=5)
    ase.io.write(tmp_path / "start.extxyz", argon)
    kw = dict(ensemble=ensemble, fmax=1e-9, min_cell="iso", traj_every=5, pressure=0.2)
    straight = run_md(_config(tmp_path, "straight", steps=16, **kw), model=lj, progress=False)
    assert straight is not None and straight.converged is False
    run_md(_config(tmp_path, "parts", steps=8, **kw), model=lj, progress=False)
    run_md(_config(tmp_path, "parts", steps=16, **kw), model=lj, progress=False, resume=True)
    for name in ("thermo.csv", "trajectory.extxyz"):
        straight_bytes = (tmp_path / "straight" / name).read_bytes()
        assert straight_bytes == (tmp_path / "parts" / name).read_bytes()


def test_etol_stops_on_a_small_energy_change(tmp_path, argon, lj):
    ase.io.write(tmp_path / "start.extxyz", argon)
    tight = run_md(_config(tmp_path, "tight", ensemble="cg"), model=lj, progress=False)
    loose = run_md(
        _config(tmp_path, "loose", ensemble="cg", fmax=1e-9, etol=1e-6), model=lj, progress=False
    )
    assert tight is not None and loose is not None and loose.converged
    assert loose.steps < tight.steps


@pytest.fixture
def cli_files(tmp_path):
    model = LennardJones(cutoff=7.0)
    save_checkpoint(tmp_path / "lj.pt", model, model_type="lennard-jones", config=model.config)
    atoms = FaceCenteredCubic("Ar", latticeconstant=5.4, size=(2, 2, 2))
    atoms.rattle(0.05, seed=1)
    ase.io.write(tmp_path / "argon.extxyz", atoms)
    cluster = atoms.copy()
    cluster.pbc = False
    ase.io.write(tmp_path / "cluster.extxyz", cluster)
    return tmp_path


def _cli(files, *argv):
    return [
        "minimize", "--model", str(files / "lj.pt"), "--structure", str(files / "argon.extxyz"),
        "--no-progress", *argv,
    ]  # fmt: skip


def test_minimize_command_converges_and_md_ensemble_fire_is_the_same(cli_files, capsys):
    out = cli_files / "relaxed"
    assert main(_cli(cli_files, "--cell", "iso", "--fmax", "1e-4", "-o", str(out))) == 0
    printed = capsys.readouterr().out
    assert "converged in" in printed and "volume" in printed
    _, _, energy, _ = _final(cli_files, "relaxed")
    md = [
        "md", "--model", str(cli_files / "lj.pt"), "--structure", str(cli_files / "argon.extxyz"),
        "--ensemble", "fire", "--steps", "1000", "--no-progress", "-o", str(cli_files / "md"),
    ]  # fmt: skip
    assert main(md) == 0
    assert "converged in" in capsys.readouterr().out
    _, _, md_energy, _ = _final(cli_files, "md")
    assert md_energy > energy  # md relaxes positions only (to the default fmax)


def test_not_converged_exits_1_with_the_last_state_written(cli_files, capsys):
    out = cli_files / "short"
    argv = _cli(cli_files, "--ensemble", "cg", "--fmax", "1e-9", "--max-steps", "7", "-o", str(out))
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not converged in 7 iterations" in err, err
    assert torch.load(out / "restart.pt", weights_only=True)["step"] == 7
    frames = ase.io.read(out / "trajectory.extxyz", index=":")
    assert frames[-1].info["step"] == 7  # the last state, though 7 is no multiple of --traj-every
    assert main([*argv[:-4], "--max-steps", "9", "-o", str(out), "--resume"]) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fmax", "0"], "fmax = 0.0: must be positive"),
        (["--fmax", "-1"], "fmax = -1.0: must be positive"),
        (["--etol", "-1"], "etol = -1.0"),
        (["--cell", "iso", "--pressure", "nan"], "pressure = nan: must be a finite number"),
        (["--cell", "iso", "--structure", "CLUSTER"], "not periodic along a, b, c"),
    ],
)
def test_bad_input_one_line_error(cli_files, capsys, argv, message):
    argv = [str(cli_files / "cluster.extxyz") if a == "CLUSTER" else a for a in argv]
    out = cli_files / "bad"
    assert main(_cli(cli_files, *argv, "-o", str(out))) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (out / "thermo.csv").exists()


def test_ase_optimiser_with_the_calculator_finds_the_same_minimum(tmp_path, argon, lj):
    """The documented ASE path: ``atoms.calc = AtomshardCalculator(...)`` with ASE's FIRE."""
    from ase.optimize import FIRE

    from atomshard.md.calculator import AtomshardCalculator

    ase.io.write(tmp_path / "start.extxyz", argon)
    run_md(_config(tmp_path, "ours", ensemble="cg"), model=lj, progress=False)
    _, _, energy, _ = _final(tmp_path, "ours")
    atoms = argon.copy()
    atoms.calc = AtomshardCalculator(lj, skin=0.5)
    FIRE(atoms, logfile=None).run(fmax=1e-5)
    assert abs(atoms.get_potential_energy() - energy) < 1e-7


@pytest.mark.skipif(
    importlib.util.find_spec("sevenn") is None,
    reason="sevenn (source of the SevenNet-0 weights) is not installed; CI installs it",
)
def test_bench_minimize_smoke(tmp_path):
    from tests.bench_scripts import load_benchmark

    report = load_benchmark("bench_minimize").main(["--smoke", "--out", str(tmp_path)])
    assert report["n_atoms"] == 24 and report["iterations"] == 2 and not report["converged"]
    assert len(report["history"]["fmax"]) == 3  # the start and two iterations
    assert report["energy_change_eV_per_atom"] < 0
    assert json.loads((tmp_path / "bench_minimize.json").read_text())["ensemble"] == "fire"
    assert (tmp_path / "bench_minimize.png").exists()
