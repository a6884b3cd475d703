"""Bad input to pair_style atomshard: one clear LAMMPS error each, never a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atomshard.lammps.build import environment
from tests.lammps.lammps_cases import cells, run_lammps, write_data

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def messages(plugin, exports, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    data = folder / "tiny.data"
    write_data(data, cells()["tiny"].atoms, ("O", "Si"))
    not_export = folder / "notes.txt"
    not_export.write_text("not a model\n")
    env = dict(os.environ)
    env.update(environment())
    env["OMP_NUM_THREADS"] = "1"
    argv = [sys.executable, "-m", "tests.lammps.bad_inputs", str(data), str(exports["nequip"])]
    done = subprocess.run(
        [*argv, str(not_export)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), folder, data, not_export


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("not_export", ["notes.txt", "is not an atomshard export", "atomshard export"]),
        ("missing", ["tiny.data.nope", "does not exist"]),
        ("not_element", ["'Xx' (atom type 2) is not an element symbol"]),
        ("unknown_element", ["element C (atom type 2) is not known", "knows O, Si"]),
        ("type_without_element", ["one element per atom type (2 types, 1 elements given)"]),
        ("not_star", ["must start with * *"]),
        ("bad_dtype", ["dtype must be float32 or float64"]),
        ("units_real", ["needs units metal", "not units real"]),
    ],
)
def test_bad_input_is_one_clear_error(messages, case, words):
    message = messages[0][case]
    assert isinstance(message, str), f"{case}: no error"
    assert message.startswith("ERROR"), message
    assert "Traceback" not in message
    for w in words:
        assert w in message, (w, message)


def test_good_input_runs_and_dtype_override(messages):
    """The same input runs; ``pair_style atomshard dtype float32`` runs the float64 export
    in float32 (float32 noise, not an error)."""
    good, f32 = messages[0]["good"], messages[0]["dtype_float32"]
    assert isinstance(good, float) and isinstance(f32, float)
    assert 0 < abs(f32 - good) <= 1e-5 * abs(good)


def test_lmp_stops_with_one_error_line(messages):
    """The plain lmp binary under mpiexec: exits non-zero with one ERROR line."""
    _, folder, data, not_export = messages
    lines = ["units metal", "atom_style atomic", f"read_data {data}", "pair_style atomshard"]
    text = "\n".join([*lines, f"pair_coeff * * {not_export} O Si", "run 0", ""])
    done = run_lammps(folder, text, 2)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    errors = [ln for ln in out.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 1 and "is not an atomshard export" in errors[0], out[-2000:]
    assert "Traceback" not in out and "Segmentation" not in out
