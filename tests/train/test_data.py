"""Datasets: readers, units, bad lines reported with file and line, splits."""

from __future__ import annotations

import numpy as np
import pytest

from atomshard.errors import InputError
from atomshard.train.data import read_dataset, read_split_file, split_indices
from tests.conftest import shared_data
from tests.train.train_cases import tiny_frames, write_tiny


def test_extxyz_with_energy_forces_stress():
    frames = read_dataset(shared_data("sevennet_hfo2", "hfo2.extxyz"))
    assert len(frames) == 2
    f = frames[0]
    assert f.n_atoms == 12 and f.energy == pytest.approx(-347.81221934)
    assert f.forces is not None and f.forces.shape == (12, 3)
    assert np.allclose(f.forces.sum(axis=0), 0, atol=1e-5)
    assert f.stress is not None and f.stress[0, 0] == pytest.approx(-0.04641964502194789)
    assert f.stress[1, 2] == f.stress[2, 1]
    assert "line 2" in f.source


def _lines(path):
    return path.read_text().splitlines()


def test_bad_extxyz_lines_are_reported_with_file_and_line(tmp_path):
    good = write_tiny(tmp_path / "good.xyz", 2)
    lines = _lines(good)
    n0 = int(lines[0])
    cases = {
        "force": (n0 + 2, lambda t: t.rsplit(None, 1)[0] + " abc", "is not a number"),
        "columns": (4, lambda t: t.rsplit(None, 1)[0], "columns"),
        "count": (n0 + 3, lambda t: "four", "atom count"),
    }
    for name, (line_no, change, message) in cases.items():
        broken = list(lines)
        broken[line_no - 1] = change(broken[line_no - 1])
        path = tmp_path / f"{name}.xyz"
        path.write_text("\n".join(broken) + "\n")
        with pytest.raises(InputError, match=f"{name}.xyz, line {line_no}: .*{message}"):
            read_dataset(path)
    cut = tmp_path / "cut.xyz"
    cut.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(InputError, match=r"cut.xyz, line \d+: frame of \d+ atoms is cut short"):
        read_dataset(cut)


def test_frame_without_any_label_names_the_frame_and_line(tmp_path):
    import ase.io

    frames = tiny_frames(2)
    frames[1].calc = None
    path = tmp_path / "nolabels.xyz"
    ase.io.write(str(path), frames, format="extxyz")
    second = int(_lines(path)[0]) + 4  # comment line of frame 1
    with pytest.raises(
        InputError,
        match=f"nolabels.xyz, frame 1 \\(line {second}\\): no reference energy, forces or stress",
    ):
        read_dataset(path)


def test_ase_database(tmp_path):
    import ase.db

    frames = tiny_frames(3)
    db = ase.db.connect(str(tmp_path / "set.db"))
    for a in frames:
        db.write(a)
    got = read_dataset(tmp_path / "set.db")
    assert [g.energy for g in got] == pytest.approx([a.get_potential_energy() for a in frames])
    assert np.allclose(got[2].forces, frames[2].get_forces())
    assert "row id 3" in got[2].source


def test_n2p2_water_needs_units_and_converts_them():
    path = shared_data("n2p2", "H2O_RPBE-D3", "train", "input.data")
    with pytest.raises(InputError, match="carries no units"):
        read_dataset(path)
    from atomshard.io.n2p2_data import read_n2p2_data
    from atomshard.units import BOHR as ANGSTROM_PER_BOHR
    from atomshard.units import HARTREE as EV_PER_HARTREE

    got = read_dataset(path, length_unit="bohr", energy_unit="hartree")
    raw = read_n2p2_data(path, length_unit=1.0, energy_unit=1.0)
    assert len(got) == len(raw) == 20
    assert got[0].energy == pytest.approx(raw[0].get_potential_energy() * EV_PER_HARTREE)
    np.testing.assert_allclose(
        got[3].forces, raw[3].get_forces() * EV_PER_HARTREE / ANGSTROM_PER_BOHR, rtol=1e-12
    )
    np.testing.assert_allclose(
        got[0].structure.positions, raw[0].positions * ANGSTROM_PER_BOHR, rtol=1e-12
    )


def test_bad_n2p2_line_is_reported(tmp_path):
    path = tmp_path / "input.data"
    path.write_text(
        "begin\nlattice 5 0 0\nlattice 0 5 0\nlattice 0 0 5\n"
        "atom 0 0 0 H 0 0 0 0 0\natom 1 0 0 H 0 0 0 0 x\nenergy -1\ncharge 0\nend\n"
    )
    with pytest.raises(InputError, match=r"input\.data, line 6: atom force must be numbers"):
        read_dataset(path, length_unit="angstrom", energy_unit="ev")


def test_random_split_and_split_file(tmp_path):
    parts = split_indices(20, valid_fraction=0.2, test_fraction=0.1, seed=3)
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [14, 4, 2]
    assert sorted(i for part in parts.values() for i in part) == list(range(20))
    assert parts == split_indices(20, valid_fraction=0.2, test_fraction=0.1, seed=3)
    with pytest.raises(InputError, match="leaves no training frame"):
        split_indices(2, valid_fraction=0.5, test_fraction=0.5)
    good = tmp_path / "split.yaml"
    good.write_text("train: [0, 2]\nvalid: [1]\n")
    assert read_split_file(good, 3) == {"train": [0, 2], "valid": [1], "test": []}
    for text, message in (
        ("train: [0, 1]\nvalid: [1]\n", "frame 1 is in both 'train' and 'valid'"),
        ("train: [0, 7]\n", "index 7 is not a frame index 0..2"),
        ("valid: [0]\n", "with 'train'"),
        ("train: [0]\nextra: [1]\n", "unknown key"),
    ):
        good.write_text(text)
        with pytest.raises(InputError, match=message):
            read_split_file(good, 3)
