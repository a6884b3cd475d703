"""FIRE and CG on 2 and 3 ranks reach the serial minimum (positions and cell), with
neighbour-list rebuilds that move atoms between ranks during the minimisation."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.lattice.cubic import FaceCenteredCubic

from atomshard.md import MDConfig, md_on_rank, run_md
from atomshard.models.pair import LennardJones
from tests.distributed.distributed_cases import x_slabs

pytestmark = pytest.mark.distributed


def _lj():
    return LennardJones(epsilon=0.0104, sigma=3.40, cutoff=7.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("minimize")
    atoms = FaceCenteredCubic("Ar", latticeconstant=5.26, size=(3, 3, 3))
    # far from the minimum: atoms move more than skin / 2, and lattice sites lie on the
    # x_slabs boundaries, so atoms change rank at rebuilds during the minimisation
    atoms.rattle(0.25, seed=7)
    ase.io.write(root / "start.extxyz", atoms)
    strained = FaceCenteredCubic("Ar", latticeconstant=5.26, size=(3, 3, 3))
    strained.set_cell(strained.cell.array @ np.diag([1.03, 0.98, 1.01]), scale_atoms=True)
    strained.rattle(0.05, seed=2)
    ase.io.write(root / "strained.extxyz", strained)
    return root


def _config(root, name, ensemble, start="start", **kw):
    return MDConfig(
        structure=str(root / f"{start}.extxyz"), ensemble=ensemble, steps=2000, fmax=1e-5,
        skin=0.2, traj_every=0, restart_every=0, output=str(root / name), **kw,
    )  # fmt: skip


def _final(root, name):
    data = torch.load(root / name / "restart.pt", weights_only=True)
    return data["state"]["positions"].numpy(), data["state"]["cell"].numpy(), data["energy"]


@pytest.fixture(scope="module")
def serial(root):
    """The serial minima (FIRE and CG agree on them: tests/md/test_minimize.py)."""
    got = {}
    for ensemble in ("fire", "cg"):
        result = run_md(_config(root, f"serial-{ensemble}", ensemble), model=_lj(), progress=False)
        assert result is not None and result.converged and result.neighbor_builds > 1
        got[ensemble] = _final(root, f"serial-{ensemble}")
    return got


@pytest.mark.parametrize("n_ranks", [2, 3])
@pytest.mark.parametrize("ensemble", ["fire", "cg"])
def test_ranks_reach_the_serial_minimum(groups, root, serial, ensemble, n_ranks):
    name = f"{ensemble}-{n_ranks}"
    (got, *_) = groups(n_ranks).run(
        md_on_rank, _config(root, name, ensemble), model=_lj(), progress=False, partition=x_slabs
    )
    assert got is not None and got.converged and got.n_ranks == n_ranks
    assert got.neighbor_builds > 1 and got.n_migrated > 0  # atoms changed rank on the way
    positions, _, energy = _final(root, name)
    ref_positions, _, ref_energy = serial[ensemble]
    assert abs(energy - ref_energy) < 1e-8
    assert np.max(np.abs(positions - ref_positions)) < 1e-3


@pytest.mark.parametrize("ensemble", ["fire", "cg"])
def test_cell_relaxation_on_two_ranks_matches_serial(groups, root, ensemble):
    kw = dict(min_cell="aniso", pressure=0.2)
    ref = run_md(
        _config(root, f"cell-serial-{ensemble}", ensemble, start="strained", **kw),
        model=_lj(),
        progress=False,
    )
    (got, *_) = groups(2).run(
        md_on_rank,
        _config(root, f"cell-2-{ensemble}", ensemble, start="strained", **kw),
        model=_lj(),
        progress=False,
    )
    assert ref is not None and got is not None and ref.converged and got.converged
    positions, cell, energy = _final(root, f"cell-2-{ensemble}")
    ref_positions, ref_cell, ref_energy = _final(root, f"cell-serial-{ensemble}")
    assert np.max(np.abs(cell - ref_cell)) < 1e-3
    assert np.max(np.abs(positions - ref_positions)) < 1e-3
    assert abs(energy - ref_energy) < 1e-7


def test_minimize_command_on_two_ranks_writes_the_same_files(tmp_path, capsys):
    """``atomshard minimize --ranks 2``: not converged in --max-steps exits 1 with the last
    state in the restart file and the trajectory, as serially."""
    from atomshard.cli import main
    from atomshard.models.checkpoint import save_checkpoint

    model = _lj()
    save_checkpoint(tmp_path / "lj.pt", model, model_type="lennard-jones", config=model.config)
    atoms = FaceCenteredCubic("Ar", latticeconstant=5.4, size=(2, 2, 2))
    atoms.rattle(0.05, seed=1)
    ase.io.write(tmp_path / "argon.extxyz", atoms)
    argv = [
        "minimize", "--model", str(tmp_path / "lj.pt"), "--structure",
        str(tmp_path / "argon.extxyz"), "--cell", "iso", "--fmax", "1e-9", "--max-steps", "6",
        "--traj-every", "4", "--no-progress",
    ]  # fmt: skip
    assert main([*argv, "-o", str(tmp_path / "serial")]) == 1
    assert main([*argv, "--ranks", "2", "-o", str(tmp_path / "ranks")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("not converged in 6 iterations" in line for line in err)
    serial = ase.io.read(tmp_path / "serial" / "trajectory.extxyz", index=":")
    ranks = ase.io.read(tmp_path / "ranks" / "trajectory.extxyz", index=":")
    assert [a.info["step"] for a in ranks] == [a.info["step"] for a in serial] == [0, 4, 6]
    assert np.max(np.abs(ranks[-1].positions - serial[-1].positions)) < 1e-9
    assert np.max(np.abs(ranks[-1].cell.array - serial[-1].cell.array)) < 1e-9
