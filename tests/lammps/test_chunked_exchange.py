"""Feature rows wider than the pair style's communication width travel in chunks.

The width is the widest exchanged row measured at export, so the chunked path of
``forward_rows`` / ``reverse_rows`` is not taken by the other tests. Here a
``sitecustomize`` on PYTHONPATH narrows it to 6 values per atom (the least the pair style
needs for its own forces and virials) on every rank; the message-passing model's numbers
must not change (newton off: the plugin's own reverse communication as well)."""

from __future__ import annotations

import numpy as np
import pytest

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

SITECUSTOMIZE = """
import dataclasses
import os
import sys

if os.environ.get("ATOMSHARD_TEST_NARROW"):
    import atomshard.lammps.bridge as bridge

    load = bridge.load

    def narrow(*args):
        handle = load(*args)
        assert handle.comm_width > 6
        print(f"narrowed {handle.comm_width} to 6", file=sys.stderr)
        return dataclasses.replace(handle, comm_width=6)

    bridge.load = narrow
"""


@pytest.mark.parametrize("newton", ["on", "off"])
def test_chunked_rows_give_the_same_numbers(plugin, exports, tmp_path, monkeypatch, newton):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(inject))
    elements = ("O", "Si")
    cell = cells()["triclinic"]
    data = tmp_path / "triclinic.data"
    write_data(data, cell.atoms, elements)
    text = case_input(data, exports["nequip"], elements, cell)
    results = []
    for narrow in ("", "1"):
        monkeypatch.setenv("ATOMSHARD_TEST_NARROW", narrow)
        done = run_lammps(tmp_path, text, 2, newton=newton)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert ("to 6" in done.stderr) == bool(narrow), done.stderr[-3000:]
        (block,) = thermo_blocks((tmp_path / "log.lammps").read_text())
        results.append(lammps_result(block[0], read_dump(data.with_suffix(".dump"))))
    wide, chunked = results
    assert abs(chunked.energy - wide.energy) <= 1e-12 * abs(wide.energy)
    assert np.max(np.abs(chunked.forces - wide.forces)) <= 1e-12
    assert np.max(np.abs(chunked.energies - wide.energies)) <= 1e-12
    assert rel(chunked.virial, wide.virial) <= 1e-12
    assert np.max(np.abs(chunked.per_atom_virial - wide.per_atom_virial)) <= 1e-12
