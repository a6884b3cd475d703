"""Labelled structures for training potentials: readers, validation and splits.

A :class:`LabelledStructure` is one configuration with the reference labels its file
has: an energy, forces, stress, or some of them (a frame with none is an error; the
trainer trains each loss term on the frames that have its label). Readers accept
extended XYZ (pre-scanned so that a broken line is reported with its file and line
number), ASE databases (``.db``), n2p2 ``input.data`` files (through
:func:`atomshard.io.n2p2_data.read_n2p2_data`, units converted to Å and eV) and
anything else ASE reads. Every error names the file and the frame, and where possible
the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atomshard.errors import InputError
from atomshard.graph import Structure, neighbor_list


@dataclass(frozen=True, eq=False)
class LabelledStructure:
    """A structure with reference labels, edges at the model cutoff once computed.

    Shapes:
        structure: positions ``[n_atoms, 3]`` float64 Å, species ``[n_atoms]`` int64 Z
        energy: total energy, eV, or None
        forces: ``[n_atoms, 3]`` float64 eV/Å, or None
        stress: ``[3, 3]`` float64 eV/Å³ (ASE sign convention), or None
        edges: ``(src, dst, shifts)`` at ``cutoff`` (see :meth:`with_edges`), or None
    """

    structure: Structure
    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None
    source: str
    edges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    cutoff: float | None = None

    @property
    def n_atoms(self) -> int:
        return self.structure.n_atoms

    def with_edges(self, cutoff: float) -> LabelledStructure:
        """A copy carrying its neighbour list at ``cutoff`` Å (reused every epoch)."""
        if self.edges is not None and self.cutoff == cutoff:
            return self
        s = self.structure
        edges = neighbor_list(s.positions, s.cell, s.pbc, cutoff=cutoff)
        return LabelledStructure(
            structure=s,
            energy=self.energy,
            forces=self.forces,
            stress=self.stress,
            source=self.source,
            edges=edges,
            cutoff=float(cutoff),
        )


def labelled_from_atoms(atoms: Any, source: str) -> LabelledStructure:
    """Labels of an :class:`ase.Atoms` (through its calculator results or ``info``).

    Any of energy, forces and stress may be missing, not all three.
    """
    from ase.stress import voigt_6_to_full_3x3_stress

    structure = Structure.from_ase(atoms, name=source)
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    energy = results.get("energy", atoms.info.get("energy"))
    if energy is not None:
        energy = float(energy)
        if not np.isfinite(energy):
            raise InputError(f"{source}: energy is not finite ({energy})")
    forces = results.get("forces", atoms.arrays.get("forces"))
    if forces is not None:
        forces = np.array(forces, dtype=np.float64).reshape(structure.n_atoms, 3)
        bad = np.nonzero(~np.isfinite(forces).all(axis=1))[0]
        if bad.size:
            raise InputError(f"{source}: force on atom {int(bad[0])} is not finite")
    stress = results.get("stress", atoms.info.get("stress"))
    if stress is not None:
        stress = np.array(stress, dtype=np.float64)
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
        elif stress.size == 9:
            stress = stress.reshape(3, 3)
        else:
            raise InputError(f"{source}: stress needs 6 (Voigt) or 9 values, got {stress.size}")
        if not np.isfinite(stress).all():
            raise InputError(f"{source}: stress is not finite")
    if energy is None and forces is None and stress is None:
        raise InputError(f"{source}: no reference energy, forces or stress (nothing to train on)")
    return LabelledStructure(
        structure=structure, energy=energy, forces=forces, stress=stress, source=source
    )


def _scan_extxyz(path: Path) -> list[int]:
    """Line numbers (1-based) of every frame's comment line; broken lines raise.

    Checks what ASE's reader would only report without a location: the atom count of
    each frame, the number of atom lines, and that atom lines have the same number of
    columns, all numeric after the symbol.
    """
    lines = path.read_text(errors="replace").splitlines()
    starts: list[int] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        where = f"{path}, line {i + 1}"
        try:
            n = int(lines[i].strip())
        except ValueError:
            raise InputError(
                f"{where}: expected the atom count of a frame, got {lines[i].strip()[:60]!r}"
            ) from None
        if n < 1:
            raise InputError(f"{where}: a frame needs at least one atom, got {n}")
        if i + 1 + n >= len(lines):
            raise InputError(
                f"{where}: frame of {n} atoms is cut short (file ends at line {len(lines)})"
            )
        starts.append(i + 2)
        width = None
        for k in range(i + 2, i + 2 + n):
            toks = lines[k].split()
            at = f"{path}, line {k + 1}"
            if width is None:
                width = len(toks)
            if len(toks) != width or len(toks) < 4:
                raise InputError(
                    f"{at}: atom line has {len(toks)} columns, expected {max(width, 4)}"
                )
            for t in toks[1:]:
                try:
                    value = float(t)
                except ValueError:
                    if t in ("T", "F", "True", "False"):
                        continue
                    raise InputError(f"{at}: {t!r} is not a number") from None
                if not np.isfinite(value):
                    raise InputError(f"{at}: {t!r} is not finite")
        i += 2 + n
    if not starts:
        raise InputError(f"{path}: no frames found")
    return starts


def read_dataset(
    path: str | Path,
    *,
    format: str | None = None,
    length_unit: str | float | None = None,
    energy_unit: str | float | None = None,
) -> list[LabelledStructure]:
    """Read every labelled frame of ``path`` (units converted to Å, eV).

    Args:
        path: extxyz (``.xyz``/``.extxyz``), ASE database (``.db``), n2p2 ``input.data``
            (by name or ``format="n2p2"``), or any file ASE reads with energies.
        format: force a reader: ``"extxyz"``, ``"db"``, ``"n2p2"`` or an ASE format name.
        length_unit, energy_unit: units of an n2p2 file (``"bohr"``, ``"hartree"``, or
            factors to Å / eV). Required for n2p2 files unless an ``input.nn`` with unit
            comments lies beside the file, since ``input.data`` itself carries no units.

    Returns:
        The frames in file order.

    Raises:
        InputError: naming the file and the line (extxyz, n2p2) or frame/row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"dataset {str(path)!r} does not exist or is not a file")
    fmt = format or _guess_format(path)
    if fmt == "n2p2":
        from atomshard.io.n2p2_data import read_n2p2_data

        nn = path.parent / "input.nn"
        if length_unit is None and energy_unit is None and not nn.is_file():
            raise InputError(
                f"{path}: n2p2 input.data carries no units and there is no input.nn beside "
                "it; give data.length_unit and data.energy_unit (e.g. bohr, hartree or "
                "angstrom, ev)"
            )
        frames = read_n2p2_data(path, length_unit=length_unit, energy_unit=energy_unit)
        return [labelled_from_atoms(a, f"{path}, structure {k}") for k, a in enumerate(frames)]
    if length_unit is not None or energy_unit is not None:
        raise InputError(f"{path}: length_unit/energy_unit apply to n2p2 files only")
    if fmt == "db":
        return _read_db(path)
    import ase.io

    starts = _scan_extxyz(path) if fmt == "extxyz" else None
    try:
        frames = ase.io.read(str(path), index=":", format=fmt)
    except Exception as exc:  # ASE raises many types; report the file and why
        raise InputError(f"{path}: could not read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(frames, list):
        frames = [frames]
    out = []
    for k, atoms in enumerate(frames):
        where = f"{path}, frame {k}" + (f" (line {starts[k]})" if starts else "")
        out.append(labelled_from_atoms(atoms, where))
    if not out:
        raise InputError(f"{path}: no frames")
    return out


def _guess_format(path: Path) -> str | None:
    name = path.name.lower()
    if name.startswith("input.data") or name.endswith(".data"):
        return "n2p2"
    if name.endswith((".xyz", ".extxyz")):
        return "extxyz"
    if name.endswith(".db"):
        return "db"
    return None


def _read_db(path: Path) -> list[LabelledStructure]:
    import ase.db

    try:
        db = ase.db.connect(str(path))
        rows = list(db.select())
    except Exception as exc:
        raise InputError(f"{path}: not a readable ASE database ({exc})") from exc
    if not rows:
        raise InputError(f"{path}: the database holds no rows")
    return [labelled_from_atoms(row.toatoms(), f"{path}, row id {row.id}") for row in rows]


def split_indices(
    n: int, *, valid_fraction: float, test_fraction: float = 0.0, seed: int = 0
) -> dict[str, list[int]]:
    """Random train/valid/test split of ``n`` frames (at least one training frame).

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}``, each sorted.
    """
    if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1:
        raise InputError(
            f"valid_fraction={valid_fraction} and test_fraction={test_fraction} must be in [0, 1)"
        )
    perm = np.random.default_rng(seed).permutation(n)
    n_valid = round(valid_fraction * n)
    n_test = round(test_fraction * n)
    if n - n_valid - n_test < 1:
        raise InputError(
            f"splitting {n} frames with valid_fraction={valid_fraction}, "
            f"test_fraction={test_fraction} leaves no training frame"
        )
    return {
        "valid": sorted(int(i) for i in perm[:n_valid]),
        "test": sorted(int(i) for i in perm[n_valid : n_valid + n_test]),
        "train": sorted(int(i) for i in perm[n_valid + n_test :]),
    }


def read_split_file(path: str | Path, n: int) -> dict[str, list[int]]:
    """A split from a JSON/YAML mapping ``{train: [...], valid: [...], test: [...]}``.

    Indices are 0-based frame numbers of the training file; they must be in range and
    the parts disjoint.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"split file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) if path.suffix != ".json" else None
        if data is None and path.suffix == ".json":
            data = json.loads(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid YAML/JSON ({exc})") from None
    if not isinstance(data, dict) or "train" not in data:
        raise InputError(f"{path}: expected a mapping with 'train' (and 'valid', 'test') lists")
    unknown = sorted(set(data) - {"train", "valid", "test"})
    if unknown:
        raise InputError(f"{path}: unknown key(s) {unknown}; known: train, valid, test")
    out: dict[str, list[int]] = {}
    seen: dict[int, str] = {}
    for part in ("train", "valid", "test"):
        values = data.get(part) or []
        if not isinstance(values, list):
            raise InputError(f"{path}: '{part}' must be a list of frame indices")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                raise InputError(f"{path}: '{part}' index {v!r} is not a frame index 0..{n - 1}")
            if v in seen:
                raise InputError(f"{path}: frame {v} is in both '{seen[v]}' and '{part}'")
            seen[v] = part
        out[part] = sorted(int(v) for v in values)
    if not out["train"]:
        raise InputError(f"{path}: 'train' is empty")
    return out


def dataset_species(samples: list[LabelledStructure]) -> tuple[int, ...]:
    """Sorted atomic numbers present in ``samples``."""
    found: set[int] = set()
    for s in samples:
        found.update(int(z) for z in np.unique(s.structure.species))
    return tuple(sorted(found))
