"""Kohn–Sham ``H`` and ``S`` from PySCF, converted into our units and orbital convention.

PySCF is optional (the ``hamiltonian`` extra); it is imported only when used. Matrices
come out of PySCF in Hartree in its AO order (p = ``px, py, pz``; other shells
``m = -l..l`` of z-polar real harmonics); :func:`run_rks` returns them in eV in our
convention (:mod:`atomshard.hamiltonian.basis`).

:func:`generate_dataset` makes a training set: rattled copies of structures, one block
file per configuration (``00000.h5``, ...), resumable (finished files are skipped; the
geometries are a deterministic function of the seed and index), runs that do not
converge reported and skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atomshard.errors import InputError
from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.hamiltonian.blocks import BlockSet
from atomshard.hamiltonian.files import BlockFile, write_block_file
from atomshard.units import HARTREE
from atomshard.utils.config import config_to_dict

__all__ = [
    "DatasetConfig",
    "PyscfConfig",
    "PyscfResult",
    "generate_dataset",
    "read_pyscf_npz",
    "run_rks",
]


def require_pyscf() -> Any:
    """The ``pyscf`` module, or a one-line :class:`InputError` saying how to install it."""
    try:
        import pyscf
    except ImportError:
        raise InputError(
            "PySCF is not installed: pip install 'atomshard[hamiltonian]' (or pip install pyscf)"
        ) from None
    return pyscf


@dataclass(frozen=True, kw_only=True)
class PyscfConfig:
    """Settings of one restricted Kohn–Sham calculation (molecules / clusters).

    Attributes:
        basis: Gaussian basis name (``sto-3g``, ``def2-svp``, ...)
        xc: exchange-correlation functional (PySCF name)
        charge, spin: total charge, 2S
        conv_tol: SCF energy convergence, Hartree
        max_cycle: SCF iteration limit (a run that hits it is "not converged")
        grid_level: DFT integration grid level (PySCF 0..9)
    """

    basis: str = "sto-3g"
    xc: str = "pbe"
    charge: int = 0
    spin: int = 0
    conv_tol: float = 1e-9
    max_cycle: int = 100
    grid_level: int = 3

    def __post_init__(self) -> None:
        if not self.basis or not isinstance(self.basis, str):
            raise InputError(f"pyscf.basis must be a basis name, got {self.basis!r}")
        if not self.conv_tol > 0:
            raise InputError(f"pyscf.conv_tol must be > 0, got {self.conv_tol!r}")
        if self.max_cycle < 1:
            raise InputError(f"pyscf.max_cycle must be >= 1, got {self.max_cycle!r}")
        if not 0 <= self.grid_level <= 9:
            raise InputError(f"pyscf.grid_level must be in 0..9, got {self.grid_level!r}")
        if self.spin != 0:
            raise InputError(f"pyscf.spin must be 0 for restricted Kohn-Sham, got {self.spin!r}")


@dataclass(frozen=True, eq=False)
class PyscfResult:
    """Converged (or not) RKS matrices in eV and our orbital convention.

    Shapes:
        hamiltonian, overlap: ``[n_orb, n_orb]`` float64 (eV, unitless)
    """

    basis: OrbitalBasis
    hamiltonian: np.ndarray
    overlap: np.ndarray
    energy: float
    converged: bool
    seconds: float
    #: electrons in the calculation (all-electron, or valence with an ECP), for band edges
    n_electrons: int = 0


def molecule(
    symbols: Sequence[str], positions: np.ndarray, cfg: PyscfConfig, *, unit: str = "Angstrom"
) -> Any:
    """A PySCF ``Mole`` (spherical GTOs, no reorientation)."""
    require_pyscf()
    from pyscf import gto

    try:
        return gto.M(
            atom=[(s, tuple(map(float, p))) for s, p in zip(symbols, positions, strict=True)],
            basis=cfg.basis,
            charge=cfg.charge,
            spin=cfg.spin,
            unit=unit,
            verbose=0,
            cart=False,
        )
    except (KeyError, RuntimeError, ValueError) as exc:
        raise InputError(
            f"PySCF cannot build the molecule with basis {cfg.basis!r}: {type(exc).__name__}: {exc}"
        ) from None


def run_rks(
    symbols: Sequence[str], positions: np.ndarray, cfg: PyscfConfig, *, unit: str = "Angstrom"
) -> PyscfResult:
    """Restricted Kohn–Sham ``F`` (= H), ``S`` and total energy for one molecule.

    Shapes:
        positions: ``[n_atoms, 3]`` float64, in ``unit``
    """
    require_pyscf()
    from pyscf import dft

    mol = molecule(symbols, positions, cfg, unit=unit)
    mf = dft.RKS(mol)
    mf.xc = cfg.xc
    mf.conv_tol = cfg.conv_tol
    mf.max_cycle = cfg.max_cycle
    mf.grids.level = cfg.grid_level
    t0 = time.perf_counter()
    energy = float(mf.kernel())
    dm = mf.make_rdm1()
    fock = np.asarray(mf.get_fock(dm=dm))
    ovlp = np.asarray(mf.get_ovlp())
    basis = OrbitalBasis.from_pyscf(mol)
    from ase.data import atomic_numbers

    # not mol.atom_charges(): those are reduced by effective core potentials
    species = np.array([atomic_numbers[mol.atom_pure_symbol(i)] for i in range(mol.natm)])
    h = basis.convert_matrix(fock, species, "pyscf") * HARTREE
    s = basis.convert_matrix(ovlp, species, "pyscf")
    return PyscfResult(
        basis=basis,
        hamiltonian=h,
        overlap=s,
        energy=energy * HARTREE,
        converged=bool(mf.converged),
        seconds=time.perf_counter() - t0,
        n_electrons=int(mol.nelectron),
    )


def read_pyscf_npz(path: str | Path) -> BlockFile:
    """A ``.npz`` of PySCF matrices (keys ``H``, ``S``, ``symbols``, ``positions_bohr``,
    ``ao_labels``; see ``../shared/data/pyscf_reference``) as a molecule's block file in
    eV and our orbital order. Needs no PySCF."""
    from ase.data import atomic_numbers
    from ase.units import Bohr

    path = Path(path)
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as .npz ({exc})") from None
    missing = [k for k in ("H", "S", "symbols", "positions_bohr", "ao_labels") if k not in data]
    if missing:
        raise InputError(f"{path}: missing array(s) {missing}")
    if "cell_bohr" in data and np.abs(data["cell_bohr"]).max() > 0:
        raise InputError(
            f"{path}: periodic PySCF matrices (k-summed) cannot be split into "
            "H(R) blocks; only molecules are supported"
        )
    symbols = [str(s) for s in data["symbols"]]
    species = np.array([atomic_numbers[s] for s in symbols], dtype=np.int64)
    basis = OrbitalBasis.from_ao_labels(symbols, [str(x) for x in data["ao_labels"]])
    h = basis.convert_matrix(np.asarray(data["H"]), species, "pyscf") * HARTREE
    s = basis.convert_matrix(np.asarray(data["S"]), species, "pyscf")
    energy = float(data["e_tot"]) * HARTREE if "e_tot" in data else None
    return BlockFile(
        basis=basis,
        species=species,
        positions=np.asarray(data["positions_bohr"], dtype=np.float64) * Bohr,
        cell=np.zeros((3, 3)),
        pbc=np.zeros(3, dtype=bool),
        matrices={
            "H": BlockSet.from_dense(h, species, basis),
            "S": BlockSet.from_dense(s, species, basis),
        },
        energy=energy,
    )


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    """A rattled-configuration data set: ``n_configs`` per input structure.

    Attributes:
        rattle: standard deviation of Gaussian displacements, Å (0: the input geometry)
        seed: configuration ``c`` of structure ``s`` uses seed ``(seed, s, c)``
        include_original: the first configuration of each structure is unrattled
    """

    pyscf: PyscfConfig
    n_configs: int = 1
    rattle: float = 0.05
    seed: int = 0
    include_original: bool = True

    def __post_init__(self) -> None:
        check_sampling(self.n_configs, self.rattle)


def check_sampling(n_configs: int, rattle: float) -> None:
    """The settings every configuration set shares (molecules here, cells in
    :mod:`atomshard.hamiltonian.pyscf_pbc`): at least one configuration, a rattle in Å."""
    if n_configs < 1:
        raise InputError(f"n_configs must be >= 1, got {n_configs!r}")
    if not 0 <= rattle < 1.0:
        raise InputError(f"rattle must be in [0, 1) Å, got {rattle!r}")


def _geometry(positions: np.ndarray, cfg: DatasetConfig, s: int, c: int) -> np.ndarray:
    if c == 0 and cfg.include_original:
        return positions.copy()
    rng = np.random.default_rng([cfg.seed, s, c])
    return positions + rng.normal(scale=cfg.rattle, size=positions.shape)


def generate_dataset(
    structures: Sequence[Any],
    out: str | Path,
    cfg: DatasetConfig,
    *,
    progress: Callable[[int], Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, list[str]]:
    """Write one block file per configuration into ``out``; returns written/skipped/failed.

    ``structures`` are :class:`ase.Atoms` (non-periodic). Finished files are kept
    (resume); ``out/dataset.json`` records the settings and must match on resume.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"config": config_to_dict(cfg), "n_structures": len(structures)}
    mpath = out / "dataset.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        if old != manifest:
            raise InputError(
                f"{out} holds a data set made with other settings ({mpath}); "
                "use another folder or the same settings to resume"
            )
    else:
        mpath.write_text(json.dumps(manifest, indent=1))
    report: dict[str, list[str]] = {"written": [], "existing": [], "failed": []}
    for s, atoms in enumerate(structures):
        if atoms.pbc.any():
            raise InputError(
                f"structure {s}: periodic structures are not supported by "
                "`data pyscf` (molecules and clusters only)"
            )
        for c in range(cfg.n_configs):
            name = f"{s * cfg.n_configs + c:05d}.h5"
            if (out / name).exists():
                report["existing"].append(name)
            else:
                pos = _geometry(atoms.positions, cfg, s, c)
                res = run_rks(atoms.get_chemical_symbols(), pos, cfg.pyscf)
                if not res.converged:
                    log(
                        f"structure {s} configuration {c}: SCF did not converge in "
                        f"{cfg.pyscf.max_cycle} cycles; skipped"
                    )
                    report["failed"].append(name)
                else:
                    species = atoms.numbers.astype(np.int64)
                    mats = {
                        "H": BlockSet.from_dense(res.hamiltonian, species, res.basis),
                        "S": BlockSet.from_dense(res.overlap, species, res.basis),
                    }
                    write_block_file(
                        out / name,
                        basis=res.basis,
                        positions=pos,
                        cell=np.zeros((3, 3)),
                        pbc=np.zeros(3, dtype=bool),
                        matrices=mats,
                        energy=res.energy,
                        metadata={
                            "source": "pyscf",
                            "n_electrons": res.n_electrons,
                            "scf_seconds": res.seconds,
                            **config_to_dict(cfg.pyscf),
                        },
                    )
                    report["written"].append(name)
            if progress is not None:
                progress(1)
    return report
