"""Block files: DeepH-style HDF5 (read and write) and DeePTB folders (read).

**DeepH-style HDF5** (what atomshard writes; one group per matrix, or the datasets at the
root for a plain single-matrix file):

=================== ================= ==============================================
dataset             shape / dtype     meaning
=================== ================= ==============================================
``atom_pairs``      ``[n, 5]`` int64  ``(Rx, Ry, Rz, i, j)``, atoms 0-based
``chunk_shapes``    ``[n, 2]`` int64  block shape ``(n_orb(Z_i), n_orb(Z_j))``
``chunk_boundaries`` ``[n+1]`` int64  offsets of each block in ``entries``
``entries``         ``[total]`` f64   blocks flattened row-major, one after another
=================== ================= ==============================================

Attributes of the group: ``units`` (``"eV"`` for H, ``""`` for S),
``orbital_convention`` (``"e3nn"``). Root datasets ``species``, ``positions`` (Å),
``cell`` (Å, rows), ``pbc`` and attributes ``basis`` (JSON ``{element: [l, ...]}``) and
optional ``energy`` (eV) describe the structure. A file written by us reads back into the
same :class:`~atomshard.hamiltonian.blocks.BlockSet` exactly.

**DeePTB folders** (``Si64.0/``): ``hamiltonians.h5`` / ``overlaps.h5`` with group ``"0"``
holding datasets ``"i_j_Rx_Ry_Rz"`` (0-based atoms), ``positions.dat`` (Å),
``cell.dat``, ``atomic_numbers.dat``, ``pbc.dat``, ``basis.dat``. Blocks are converted from
DeePTB's orbital order (p = ``py, pz, px``) into ours on read.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from atomshard.errors import InputError
from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.hamiltonian.blocks import BlockSet, tile_blockset

__all__ = ["BlockFile", "read_block_file", "read_deeptb", "tile_block_file", "write_block_file"]

_REQUIRED = ("atom_pairs", "chunk_shapes", "chunk_boundaries", "entries")


@dataclass(frozen=True, eq=False)
class BlockFile:
    """Contents of one structure's block file.

    Shapes:
        positions: ``[n_atoms, 3]`` float64 Å; cell: ``[3, 3]`` float64 Å; pbc: ``[3]`` bool
    """

    basis: OrbitalBasis
    species: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    matrices: dict[str, BlockSet]
    energy: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_ase(cls, atoms, basis: OrbitalBasis) -> BlockFile:  # type: ignore[no-untyped-def]
        """A structure without matrices (for prediction)."""
        basis.check_species(atoms.numbers)
        return cls(
            basis=basis,
            species=np.asarray(atoms.numbers, dtype=np.int64),
            positions=np.asarray(atoms.positions, dtype=np.float64),
            cell=np.asarray(atoms.cell.array, dtype=np.float64),
            pbc=np.asarray(atoms.pbc, dtype=bool),
            matrices={},
        )

    def to_ase(self):  # type: ignore[no-untyped-def]
        from ase import Atoms

        return Atoms(numbers=self.species, positions=self.positions, cell=self.cell, pbc=self.pbc)


def write_blockset_group(group: h5py.Group, blocks: BlockSet, units: str) -> None:
    """Write ``blocks`` into an open h5 group in the DeepH-style layout of this module."""
    shapes = np.array([b.shape for b in blocks.blocks], dtype=np.int64).reshape(-1, 2)
    bounds = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])]).astype(np.int64)
    entries = (
        np.concatenate([b.reshape(-1) for b in blocks.blocks]) if blocks.blocks else np.zeros(0)
    )
    group.create_dataset("atom_pairs", data=blocks.atom_pairs)
    group.create_dataset("chunk_shapes", data=shapes)
    group.create_dataset("chunk_boundaries", data=bounds)
    group.create_dataset("entries", data=entries.astype(np.float64))
    group.attrs["units"] = units
    group.attrs["orbital_convention"] = "e3nn"


def write_block_file(
    path: str | Path,
    *,
    basis: OrbitalBasis,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    matrices: dict[str, BlockSet],
    energy: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write blocks (``{"H": ..., "S": ...}``) and the structure atomically.

    ``metadata`` (JSON-serialisable) goes to the root attribute ``metadata``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with h5py.File(tmp, "w") as f:
        species = next(iter(matrices.values())).species
        f.create_dataset("species", data=species)
        f.create_dataset("positions", data=np.asarray(positions, dtype=np.float64))
        f.create_dataset("cell", data=np.asarray(cell, dtype=np.float64))
        f.create_dataset("pbc", data=np.asarray(pbc, dtype=bool))
        f.attrs["basis"] = json.dumps({k: list(v) for k, v in basis.shells.items()})
        if energy is not None:
            f.attrs["energy"] = float(energy)
        if metadata:
            f.attrs["metadata"] = json.dumps(metadata)
        for name, blocks in matrices.items():
            blocks.check_basis(basis, where=f"{path}: {name}")
            write_blockset_group(f.create_group(name), blocks, "eV" if name.upper() == "H" else "")
    tmp.replace(path)  # readers never see a half-written file


def _read_group(group: h5py.Group, species: np.ndarray, where: str) -> BlockSet:
    missing = [k for k in _REQUIRED if k not in group]
    if missing:
        raise InputError(
            f"{where}: missing dataset(s) {missing}; a DeepH-style block file "
            f"needs {list(_REQUIRED)}"
        )
    pairs = np.asarray(group["atom_pairs"][()], dtype=np.int64)
    shapes = np.asarray(group["chunk_shapes"][()], dtype=np.int64)
    bounds = np.asarray(group["chunk_boundaries"][()], dtype=np.int64)
    entries = np.asarray(group["entries"][()], dtype=np.float64)
    n = len(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 5:
        raise InputError(f"{where}: atom_pairs must be [n, 5], got {pairs.shape}")
    if shapes.shape != (n, 2) or bounds.shape != (n + 1,):
        raise InputError(
            f"{where}: chunk_shapes {shapes.shape} / chunk_boundaries "
            f"{bounds.shape} do not match {n} atom pairs"
        )
    sizes = shapes[:, 0] * shapes[:, 1]
    if not np.array_equal(np.diff(bounds), sizes) or bounds[-1] != len(entries):
        raise InputError(f"{where}: chunk_boundaries do not match chunk_shapes and entries")
    blocks = tuple(entries[bounds[k] : bounds[k + 1]].reshape(shapes[k]) for k in range(n))
    return BlockSet(species=species, atom_pairs=pairs, blocks=blocks)


def read_block_file(path: str | Path) -> BlockFile:
    """Read a file written by :func:`write_block_file` (or a plain root-level DeepH file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"block file {str(path)!r} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not an HDF5 file ({exc})") from None
    with f:
        for key in ("species", "positions", "cell", "pbc"):
            if key not in f:
                raise InputError(f"{path}: missing dataset {key!r} (structure)")
        if "basis" not in f.attrs:
            raise InputError(f"{path}: missing attribute 'basis'")
        species = np.asarray(f["species"][()], dtype=np.int64)
        basis = OrbitalBasis(shells=json.loads(f.attrs["basis"]))
        if all(k in f for k in _REQUIRED):
            matrices = {"H": _read_group(f, species, str(path))}
        else:
            groups = [k for k in f if isinstance(f[k], h5py.Group)]
            if not groups:
                missing = [k for k in _REQUIRED if k not in f]
                raise InputError(f"{path}: missing dataset(s) {missing} and no matrix groups")
            matrices = {k: _read_group(f[k], species, f"{path}:{k}") for k in groups}
        for name, blocks in matrices.items():
            blocks.check_basis(basis, where=f"{path}:{name}")
        energy = float(f.attrs["energy"]) if "energy" in f.attrs else None
        metadata = json.loads(f.attrs["metadata"]) if "metadata" in f.attrs else {}
        return BlockFile(
            basis=basis,
            species=species,
            positions=np.asarray(f["positions"][()], dtype=np.float64),
            cell=np.asarray(f["cell"][()], dtype=np.float64),
            pbc=np.asarray(f["pbc"][()], dtype=bool),
            matrices=matrices,
            energy=energy,
            metadata=metadata,
        )


def _read_deeptb_h5(path: Path, species: np.ndarray, frame: str) -> BlockSet:
    if not path.is_file():
        raise InputError(f"DeePTB file {str(path)!r} does not exist")
    with h5py.File(path, "r") as f:
        if frame not in f:
            raise InputError(f"{path}: no frame group {frame!r} (groups: {list(f)})")
        g = f[frame]
        pairs, blocks = [], []
        for key in g:
            parts = key.split("_")
            if len(parts) != 5:
                raise InputError(f"{path}: dataset {key!r} is not named i_j_Rx_Ry_Rz")
            i, j, rx, ry, rz = (int(p) for p in parts)
            pairs.append((rx, ry, rz, i, j))
            blocks.append(np.asarray(g[key][()], dtype=np.float64))
    order = np.lexsort(np.array(pairs).T[::-1]) if pairs else np.zeros(0, dtype=np.int64)
    return BlockSet(
        species=species, atom_pairs=np.array(pairs)[order], blocks=tuple(blocks[k] for k in order)
    )


def read_deeptb(folder: str | Path, *, frame: str = "0") -> BlockFile:
    """Read a DeePTB frame folder (H and S), converting blocks into our orbital order."""
    folder = Path(folder)
    for name in ("positions.dat", "cell.dat", "atomic_numbers.dat", "basis.dat"):
        if not (folder / name).is_file():
            raise InputError(f"DeePTB folder {str(folder)!r} lacks {name}")
    species = np.loadtxt(folder / "atomic_numbers.dat", dtype=np.int64).reshape(-1)
    positions = np.loadtxt(folder / "positions.dat").reshape(-1, 3)
    cell = np.loadtxt(folder / "cell.dat").reshape(3, 3)
    pbc = (
        np.loadtxt(folder / "pbc.dat").reshape(-1) != 0
        if (folder / "pbc.dat").is_file()
        else np.ones(3, dtype=bool)
    )
    try:
        spec = ast.literal_eval((folder / "basis.dat").read_text())
    except (ValueError, SyntaxError) as exc:
        raise InputError(f"{folder / 'basis.dat'}: cannot parse ({exc})") from None
    basis = OrbitalBasis(shells=spec)
    matrices = {}
    for key, name in (("H", "hamiltonians.h5"), ("S", "overlaps.h5")):
        if (folder / name).is_file():
            raw = _read_deeptb_h5(folder / name, species, frame)
            matrices[key] = raw.convert(basis, "deeptb")
    if not matrices:
        raise InputError(
            f"DeePTB folder {str(folder)!r} has neither hamiltonians.h5 nor overlaps.h5"
        )
    return BlockFile(
        basis=basis, species=species, positions=positions, cell=cell, pbc=pbc, matrices=matrices
    )


def tile_block_file(source: BlockFile, repeat: Sequence[int]) -> BlockFile:
    """``source`` repeated ``a x b x c``, its matrices (H, S) tiled with it."""
    reps = tuple(int(r) for r in repeat)
    if len(reps) != 3 or min(reps) < 1:
        raise InputError(f"--repeat needs three integers >= 1, got {list(repeat)}")
    if reps == (1, 1, 1):
        return source
    if not all(source.pbc[k] or reps[k] == 1 for k in range(3)):
        raise InputError(f"--repeat {reps}: only periodic directions can be tiled")
    atoms = source.to_ase().repeat(reps)
    tiled = BlockFile.from_ase(atoms, source.basis)
    matrices = {name: tile_blockset(b, reps) for name, b in source.matrices.items()}
    return BlockFile(
        basis=tiled.basis,
        species=tiled.species,
        positions=tiled.positions,
        cell=tiled.cell,
        pbc=tiled.pbc,
        matrices=matrices,
    )
