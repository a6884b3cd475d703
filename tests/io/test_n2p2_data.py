"""n2p2 input.data reader: structures, units, reference energies, malformed lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atomshard.errors import InputError
from atomshard.io.n2p2_data import read_n2p2_data
from atomshard.io.structures import read_structures
from atomshard.units import BOHR, HARTREE
from tests.conftest import shared_data

GOOD = """begin
comment two atoms
lattice 10.0 0.0 0.0
lattice 0.0 10.0 0.0
lattice 0.0 0.0 10.0
atom 1.0 1.0 1.0 H 0.0 0.0 0.1 0.2 0.3
atom 2.0 1.0 1.0 O -0.5 0.0 -0.1 -0.2 -0.3
energy -2.0
charge 0.0
end
begin
atom 0.0 0.0 0.0 Ne 0.0 0.0 0.0 0.0 0.0
atom 3.0 0.0 0.0 Ne 0.0 0.0 0.0 0.0 0.0
energy 0.5
end
"""


def test_reads_frames_with_units(tmp_path: Path) -> None:
    path = tmp_path / "input.data"
    path.write_text(GOOD)
    frames = read_n2p2_data(path, length_unit="bohr", energy_unit="hartree")
    assert len(frames) == 2
    a, b = frames
    assert a.get_chemical_symbols() == ["H", "O"] and a.pbc.all() and not b.pbc.any()
    np.testing.assert_allclose(a.cell[0, 0], 10.0 * BOHR)
    np.testing.assert_allclose(a.positions[1], np.array([2.0, 1.0, 1.0]) * BOHR)
    assert a.get_potential_energy() == pytest.approx(-2.0 * HARTREE)
    np.testing.assert_allclose(a.get_forces()[0], np.array([0.1, 0.2, 0.3]) * HARTREE
                               / BOHR)  # fmt: skip
    assert a.get_initial_charges()[1] == -0.5 and a.info["comment"] == "two atoms"
    assert read_n2p2_data(path)[1].positions[1, 0] == 3.0  # default: Å, eV


def test_units_from_input_nn_beside_and_read_structures() -> None:
    path = shared_data("n2p2", "H2O_RPBE-D3", "input.data")
    atoms = read_structures(path)[0]  # recognised by name; Bohr from input.nn comments
    assert len(atoms) == 1080
    np.testing.assert_allclose(atoms.cell.lengths()[0], 42.888632301285426 * BOHR)
    train = read_n2p2_data(shared_data("n2p2", "Cu2S_PBE", "train", "input.data"))
    assert len(train) > 1 and all(a.calc is not None for a in train)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("atom 2.0 1.0 1.0 O", "atom 2.0 1.0 O"), r"line 7: 'atom' needs"),
        (GOOD.replace("energy -2.0", "energy abc"), r"line 8: energy must be numbers"),
        (GOOD.replace(" O -0.5", " Qq -0.5"), r"line 7: unknown element symbol 'Qq'"),
        (GOOD.replace("lattice 0.0 10.0 0.0\n", ""), "need 0 or 3 'lattice' lines"),
        (GOOD.replace("charge 0.0", "spin 1"), r"line 9: unknown keyword 'spin'"),
        (GOOD[: GOOD.rindex("end")], "has no 'end'"),
        ("atom 0 0 0 H 0 0 0 0 0\n", r"line 1: 'atom' outside a begin/end block"),
        ("# nothing\n", "no structures"),
        (GOOD.replace("atom 1.0 1.0 1.0 H", "atom nan 1.0 1.0 H"), "line 6: atom position"),
    ],
)  # fmt: skip
def test_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "input.data"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_n2p2_data(path)
