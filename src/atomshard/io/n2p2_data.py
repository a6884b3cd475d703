"""Reader for n2p2 ``input.data`` structure files.

Format (one block per structure)::

    begin
    comment free text
    lattice ax ay az        (three lines, rows = cell vectors; absent => non-periodic)
    atom x y z El q n fx fy fz
    energy E
    charge Q
    end

Positions are converted to Å and energies/forces to eV and eV/Å (units default to the
``# Length unit`` / ``# Energy unit`` comments of an ``input.nn`` next to the file, else
Å and eV). The reference energy and forces are attached as an
:class:`ase.calculators.singlepoint.SinglePointCalculator` (``atoms.get_potential_energy()``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atomshard.errors import InputError
from atomshard.io.n2p2 import ENERGY_UNITS, LENGTH_UNITS, N2P2Units, _unit, read_input_nn


def _units_beside(path: Path) -> N2P2Units:
    nn = path.parent / "input.nn"
    if nn.is_file():
        try:
            cl, ce = read_input_nn(nn).units_comment
        except InputError:
            return N2P2Units()
        if cl is not None and ce is not None:
            return N2P2Units.parse(cl, ce, f"comments in {nn}")
    return N2P2Units()


def read_n2p2_data(
    path: str | Path,
    *,
    length_unit: str | float | None = None,
    energy_unit: str | float | None = None,
):
    """Read every structure of an n2p2 ``input.data`` file as :class:`ase.Atoms` (Å, eV).

    Args:
        path: the file.
        length_unit, energy_unit: units of the file (``"bohr"``, ``"hartree"``, ...,
            or factors in Å / eV); default: see the module docstring.

    Returns:
        list of :class:`ase.Atoms`; ``atoms.info["comment"]`` holds the comment lines,
        ``atoms.info["charge"]`` the total charge when given, per-atom charges are in
        ``atoms.arrays["initial_charges"]``.
    """
    import ase
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.data import atomic_numbers

    path = Path(path)
    if not path.is_file():
        raise InputError(f"n2p2 data file {str(path)!r} does not exist")
    if length_unit is None and energy_unit is None:
        units = _units_beside(path)
    else:
        units = N2P2Units(
            _unit(length_unit or 1.0, LENGTH_UNITS, "length"),
            _unit(energy_unit or 1.0, ENERGY_UNITS, "energy"),
            "caller",
        )
    lu, eu = units.length, units.energy
    frames = []
    block: dict | None = None
    for n, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        toks = text.split()
        if not toks or toks[0].startswith("#"):
            continue
        key = toks[0].lower()
        where = f"{path}, line {n}"
        if key == "begin":
            if block is not None:
                raise InputError(
                    f"{where}: 'begin' before the 'end' of the structure at line {block['line']}"
                )
            block = {
                "line": n,
                "lattice": [],
                "pos": [],
                "el": [],
                "q": [],
                "f": [],
                "energy": None,
                "charge": None,
                "comment": [],
            }
            continue
        if block is None:
            raise InputError(f"{where}: {toks[0]!r} outside a begin/end block")
        if key == "end":
            frames.append(_finish(block, path, lu, eu, ase, SinglePointCalculator))
            block = None
        elif key == "comment":
            block["comment"].append(text.split(None, 1)[1] if len(toks) > 1 else "")
        elif key == "lattice":
            block["lattice"].append(_floats(toks[1:], 3, where, "lattice"))
        elif key == "atom":
            if len(toks) != 10:
                raise InputError(
                    f"{where}: 'atom' needs x y z element charge n fx fy fz "
                    f"(9 values), got {len(toks) - 1}"
                )
            if toks[4] not in atomic_numbers or toks[4] == "X":
                raise InputError(f"{where}: unknown element symbol {toks[4]!r}")
            block["pos"].append(_floats(toks[1:4], 3, where, "atom position"))
            block["el"].append(toks[4])
            block["q"].append(_floats(toks[5:6], 1, where, "atom charge")[0])
            block["f"].append(_floats(toks[7:10], 3, where, "atom force"))
        elif key == "energy":
            block["energy"] = _floats(toks[1:], 1, where, "energy")[0]
        elif key == "charge":
            block["charge"] = _floats(toks[1:], 1, where, "charge")[0]
        else:
            raise InputError(
                f"{where}: unknown keyword {toks[0]!r} (expected begin, comment, "
                "lattice, atom, energy, charge, end)"
            )
    if block is not None:
        raise InputError(f"{path}: structure starting at line {block['line']} has no 'end'")
    if not frames:
        raise InputError(f"{path}: no structures (begin ... end blocks) found")
    return frames


def _floats(toks: list[str], count: int, where: str, what: str) -> list[float]:
    if len(toks) != count:
        raise InputError(f"{where}: {what} needs {count} number(s), got {len(toks)}")
    try:
        values = [float(t) for t in toks]
    except ValueError:
        raise InputError(f"{where}: {what} must be numbers, got {' '.join(toks)!r}") from None
    if not all(np.isfinite(values)):
        raise InputError(f"{where}: {what} is not finite: {' '.join(toks)!r}")
    return values


def _finish(block: dict, path: Path, lu: float, eu: float, ase, spc):
    where = f"{path}, structure starting at line {block['line']}"
    if not block["pos"]:
        raise InputError(f"{where}: no atoms")
    if len(block["lattice"]) not in (0, 3):
        raise InputError(f"{where}: need 0 or 3 'lattice' lines, got {len(block['lattice'])}")
    periodic = len(block["lattice"]) == 3
    atoms = ase.Atoms(
        symbols=block["el"],
        positions=np.array(block["pos"]) * lu,
        cell=np.array(block["lattice"]) * lu if periodic else None,
        pbc=periodic,
    )
    atoms.set_initial_charges(np.array(block["q"]))
    if block["comment"]:
        atoms.info["comment"] = "\n".join(block["comment"])
    if block["charge"] is not None:
        atoms.info["charge"] = block["charge"]
    # a structure without an 'energy' line keeps its forces (the atom lines always have them)
    energy = block["energy"] * eu if block["energy"] is not None else None
    atoms.calc = spc(atoms, energy=energy, forces=np.array(block["f"]) * (eu / lu))
    return atoms
