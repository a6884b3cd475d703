"""Feature rows wider than the pair style's communication width travel in chunks.

The width is the widest exchanged row measured at export, so the chunked path of
``forward_rows`` / ``reverse_rows`` is not taken by the other tests. Here a
``sitecustomize`` on PYTHONPATH narrows it to 6 values per atom (the least the pair style
needs for its own forces and virials) on every rank; the message-passing model's numbers
must not change (newton off: the plugin's own reverse communication as well).

Float32 features travel as float32, two per double of LAMMPS's buffers. The float32 case
also sends every feature row in two calls of odd widths (5 columns, then the rest), so
the last double of an atom holds one float and a spare half: still the same numbers."""

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

if os.environ.get("ATOMSHARD_TEST_ODD"):
    import torch

    import atomshard.lammps.bridge as bridge

    def odd(send):
        def split(self, rows):
            if rows.dtype != torch.float32 or rows.shape[1] <= 5:
                return send(self, rows)
            print(f"odd widths 5 + {rows.shape[1] - 5}", file=sys.stderr)
            for part in (rows[:, :5], rows[:, 5:]):
                part_rows = part.contiguous()
                send(self, part_rows)
                part.copy_(part_rows)

        return split

    bridge._Rows.forward = odd(bridge._Rows.forward)
    bridge._Rows.reverse = odd(bridge._Rows.reverse)
"""


@pytest.mark.parametrize(("newton", "model"), [("on", "nequip"), ("off", "nequip"),
                                              ("on", "nequip32"), ("off", "nequip32")])  # fmt: skip
def test_chunked_rows_give_the_same_numbers(plugin, exports, tmp_path, monkeypatch, newton, model):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(inject))
    elements = ("O", "Si")
    cell = cells()["triclinic"]
    data = tmp_path / "triclinic.data"
    write_data(data, cell.atoms, elements)
    text = case_input(data, exports[model], elements, cell)
    results = []
    for narrow in ("", "1"):
        monkeypatch.setenv("ATOMSHARD_TEST_NARROW", narrow)
        monkeypatch.setenv("ATOMSHARD_TEST_ODD", narrow if model == "nequip32" else "")
        done = run_lammps(tmp_path, text, 2, newton=newton)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert ("to 6" in done.stderr) == bool(narrow), done.stderr[-3000:]
        odd = bool(narrow) and model == "nequip32"
        assert ("odd widths 5 + " in done.stderr) == odd, done.stderr[-3000:]
        (block,) = thermo_blocks((tmp_path / "log.lammps").read_text())
        results.append(lammps_result(block[0], read_dump(data.with_suffix(".dump"))))
    wide, chunked = results
    assert abs(chunked.energy - wide.energy) <= 1e-12 * abs(wide.energy)
    assert np.max(np.abs(chunked.forces - wide.forces)) <= 1e-12
    assert np.max(np.abs(chunked.energies - wide.energies)) <= 1e-12
    assert rel(chunked.virial, wide.virial) <= 1e-12
    assert np.max(np.abs(chunked.per_atom_virial - wide.per_atom_virial)) <= 1e-12
