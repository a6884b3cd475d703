"""A converted SevenNet checkpoint other than SevenNet-0, end to end: a small random sevenn
model saved as sevenn saves one, ``atomshard export sevennet:PATH -o FILE --dtype
float64``, then LAMMPS on 1 and 2 ranks against ``atomshard eval``'s calculator on the
same checkpoint (energy and virial within 1e-10 relative, forces and per-atom energies
within 1e-10 eV/Å, eV)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.lammps.lammps_cases import (
    case_input,
    cells,
    lammps_result,
    read_dump,
    rel,
    run_lammps,
    thermo_blocks,
    write_data,
)

pytest.importorskip("sevenn", reason="sevenn (atomshard[sevennet]) is not installed")


def test_converted_sevennet_checkpoint_in_lammps(plugin, tmp_path, monkeypatch, capsys):
    from atomshard.cli import main
    from atomshard.md.calculator import AtomshardCalculator
    from tests.models.sevennet_cases import small_sevenn_checkpoint

    monkeypatch.setenv("ATOMSHARD_CACHE", str(tmp_path / "cache"))  # the converted copy
    source = small_sevenn_checkpoint(tmp_path / "small.pth")
    spec = f"sevennet:{source}"
    model_file = tmp_path / "small.export.pt"
    assert main(["export", spec, "-o", str(model_file), "--dtype", "float64"]) == 0
    printed = capsys.readouterr().out
    assert "3 layer(s)" in printed and "O Si" in printed

    elements = ("O", "Si")
    cell = cells()["triclinic"]  # 5.4 Å along z, less than twice the 4 Å cutoff
    data = tmp_path / "quartz.data"
    atoms = write_data(data, cell.atoms, elements)
    atoms.calc = AtomshardCalculator(spec, dtype=torch.float64)  # what `atomshard eval` runs
    energy = atoms.get_potential_energy()
    energies = atoms.get_potential_energies()
    forces = atoms.get_forces()
    xx, yy, zz, yz, xz, xy = -atoms.get_stress() * atoms.get_volume()
    virial = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    assert np.max(np.abs(forces)) > 1e-3  # a model that does something

    for ranks in (1, 2):
        done = run_lammps(tmp_path, case_input(data, model_file, elements, cell), ranks)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (block,) = thermo_blocks((tmp_path / "log.lammps").read_text())
        got = lammps_result(block[0], read_dump(data.with_suffix(".dump")))
        assert abs(got.energy - energy) <= 1e-10 * abs(energy), ranks
        assert np.max(np.abs(got.forces - forces)) <= 1e-10, ranks
        assert np.max(np.abs(got.energies - energies)) <= 1e-10, ranks
        assert rel(got.virial, virial) <= 1e-10, ranks
