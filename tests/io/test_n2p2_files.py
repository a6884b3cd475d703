"""n2p2 potential-folder reader: parsing, units, and clear errors for bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from atomshard.errors import InputError
from atomshard.io.n2p2 import read_n2p2_potential
from atomshard.models.bpnn import load_n2p2_potential
from atomshard.units import BOHR, HARTREE
from tests.conftest import shared_data


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(shared_data("n2p2", name), target)
    for f in target.iterdir():
        f.chmod(0o644)
    return target


def test_reads_water_potential() -> None:
    pot = read_n2p2_potential(shared_data("n2p2", "H2O_RPBE-D3"))
    s = pot.settings
    assert s.elements == ["H", "O"] and s.atomic_numbers == [1, 8]
    assert [len(f) for f in s.symmetry_functions] == [27, 30]
    assert s.scaling == "scale_center" and s.cutoff_type == 2 and s.activations == "ttl"
    assert s.hidden_nodes == [25, 25]
    assert pot.weights[1][0].shape == (25, 30) and pot.biases[1][2].shape == (1,)
    assert pot.units.length == BOHR and pot.units.energy == HARTREE
    assert "comments" in pot.units.source
    # n2p2 order: by type, then (rc, eta, rs, e1) for radial functions
    first = s.symmetry_functions[0][:3]
    assert [(sf.type, sf.eta, sf.e1) for sf in first] == [(2, 0.001, 0), (2, 0.001, 1),
                                                          (2, 0.01, 0)]  # fmt: skip


def test_units_default_and_override() -> None:
    folder = shared_data("n2p2", "DMABN_SCAN")  # no unit comments in input.nn
    assert read_n2p2_potential(folder).units.source == "assumed"
    pot = read_n2p2_potential(folder, length_unit="bohr", energy_unit="hartree")
    assert pot.units.length == BOHR and pot.units.source == "caller"
    model = load_n2p2_potential(folder, length_unit="bohr", energy_unit="hartree")
    assert model.cutoff == pytest.approx(15.0 * BOHR)
    with pytest.raises(InputError, match="unknown length unit 'furlong'"):
        read_n2p2_potential(folder, length_unit="furlong")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + "\nnormalize_nodes\n", r"keyword 'normalize_nodes' is not supported"),
        (lambda t: t + "\nsymfunction_short H 7 H 1.0\n", "symmetry function type 7"),
        (lambda t: t + "\nsymfunction_short H 2 Xe 0.1 0.0 12.0\n", "element 'Xe'"),
        (lambda t: t + "\nsymfunction_short H 2 O 0.1 12.0\n", "needs 4 parameters"),
        (lambda t: t.replace("cutoff_type                     2", "cutoff_type 9"),
         "cutoff_type 9"),
        (lambda t: t.replace("t t l", "t q l"), "global_activation_short"),
        (lambda t: t + "\nnnp_type 4\n", "nnp_type 4"),
    ],
)  # fmt: skip
def test_bad_input_nn(tmp_path: Path, edit, message: str) -> None:
    folder = _copy("H2O_RPBE-D3", tmp_path)
    nn = folder / "input.nn"
    nn.write_text(edit(nn.read_text()))
    with pytest.raises(InputError, match=message) as err:
        read_n2p2_potential(folder)
    assert "input.nn, line" in str(err.value) or "input.nn" in str(err.value)


def test_unsupported_keyword_names_file_and_line(tmp_path: Path) -> None:
    folder = _copy("H2O_RPBE-D3", tmp_path)
    nn = folder / "input.nn"
    lines = nn.read_text().splitlines()
    lines.insert(4, "use_electrostatics")
    nn.write_text("\n".join(lines))
    with pytest.raises(InputError, match=r"input.nn, line 5: keyword 'use_electrostatics'"):
        read_n2p2_potential(folder)


def test_missing_weights_file(tmp_path: Path) -> None:
    folder = _copy("H2O_RPBE-D3", tmp_path)
    (folder / "weights.008.data").unlink()
    with pytest.raises(InputError, match=r"weights.008.data' does not exist"):
        read_n2p2_potential(folder)


def test_bad_weights_and_scaling(tmp_path: Path) -> None:
    folder = _copy("H2O_RPBE-D3", tmp_path)
    w = folder / "weights.001.data"
    lines = w.read_text().splitlines()
    w.write_text("\n".join(lines[:-1]))  # drop the last connection
    with pytest.raises(InputError, match="missing connections"):
        read_n2p2_potential(folder)
    w.write_text("\n".join([*lines[:-1], "1.0 a 1 0 99 1 1"]))
    with pytest.raises(InputError, match=r"weights.001.data, line \d+: weight indices"):
        read_n2p2_potential(folder)
    shutil.copy(shared_data("n2p2", "H2O_RPBE-D3", "weights.001.data"), w)
    sc = folder / "scaling.data"
    sc.write_text(sc.read_text().replace("         1          3", "         1          x", 1))
    with pytest.raises(InputError, match=r"scaling.data, line \d+: SF index must be an integer"):
        read_n2p2_potential(folder)


def test_missing_folder() -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_n2p2_potential("/nonexistent/potential")
