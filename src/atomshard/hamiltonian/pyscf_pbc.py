"""Real-space ``H(R)`` and ``S(R)`` of periodic solids from PySCF PBC (Γ-point Kohn–Sham).

**What is computed.** A restricted Kohn–Sham SCF at the Γ point (PBE by default) with
GTH pseudopotentials and a GTH Gaussian basis (FFTDF, ``ke_cutoff``). The converged
Γ-point density defines a lattice-periodic Kohn–Sham potential, hence a real-space
Hamiltonian ``H_ij(R) = <i, 0|H|j, R>`` for every lattice translation ``R``. PySCF gives
Bloch matrices ``H(k) = Σ_R exp(i k·R) H(R)``; we evaluate them (``get_hcore`` +
``get_veff(kpts_band=...)``, i.e. PySCF's band-structure path, with the Γ density) on a
``N1 x N2 x N3`` Monkhorst–Pack grid including Γ and invert the Fourier sum:

    H(R) = 1/Nk Σ_k exp(-i k·R) H(k)

That is exact for the periodic sum ``Σ_m H(R + N m)`` (aliasing). The grid is chosen per
direction so that ``N_a * width_a >= block_cutoff + image_range`` (``width_a`` the
cell's height along ``a``): a block within ``block_cutoff`` is aliased only with
images at least ``image_range`` farther away. Of the ``N1 N2 N3`` equivalent
translations each pair gets its nearest image; blocks whose atoms are within
``block_cutoff`` are written. ``S(R)`` is computed the same way (``pbc_intor`` at the same
k-points). The largest ``|H|`` of pairs beyond ``block_cutoff`` is recorded
(``dropped_max``), so a user sees what a shorter cutoff misses.

Everything is converted to eV and our orbital convention
(:mod:`atomshard.hamiltonian.basis`) and written as DeepH-style block files
(:func:`~atomshard.hamiltonian.files.write_block_file`), one per structure,
atomically; :func:`generate_pbc_dataset` resumes (finished files skipped; geometries are a
function of the seed and the index), reports an SCF that does not converge in one line
naming the structure, and logs the time per structure (``timings.csv``).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atomshard.errors import InputError
from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.hamiltonian.blocks import BlockSet
from atomshard.hamiltonian.files import write_block_file
from atomshard.hamiltonian.pyscf_data import check_sampling, require_pyscf
from atomshard.units import HARTREE
from atomshard.utils.config import config_to_dict
from atomshard.utils.signals import StopOnSigterm

__all__ = [
    "PbcConfig",
    "PbcDatasetConfig",
    "PbcResult",
    "bloch_grid",
    "gamma_scf",
    "generate_pbc_dataset",
    "perturbed_cell",
    "run_pbc",
]


INTEGRALS = ("fftdf", "multigrid")


@dataclass(frozen=True, kw_only=True)
class PbcConfig:
    """Settings of one Γ-point periodic Kohn–Sham calculation and its block extraction.

    Attributes:
        basis: GTH basis (``gth-szv-molopt-sr``, ``gth-szv``, ``gth-dzvp``, ...)
        pseudo: pseudopotential (``gth-pbe``)
        xc: functional (PySCF name)
        ke_cutoff: plane-wave cutoff of the density, Hartree (FFTDF grid; with
            ``integrals="multigrid"`` the cutoff of the finest grid)
        integrals: how the Coulomb and XC potentials are evaluated: ``"fftdf"`` (PySCF's
            FFTDF, one uniform grid) or ``"multigrid"`` (PySCF's multigrid, a hierarchy of
            grids by Gaussian exponent; faster, and at a high ``ke_cutoff`` it removes the
            egg-box effect of a hard pseudopotential such as O's — the on-site blocks of
            symmetry-equivalent atoms then agree; docs/hamiltonian.md, "Oxides")
        conv_tol: SCF energy tolerance, Hartree; max_cycle: SCF iteration limit
        block_cutoff: Å; blocks of atom pairs within it are written
        image_range: Å; the k grid makes a kept block's aliased images at least this far
        smearing: Fermi smearing width, Hartree (0: none); helps metallic cells converge
        kmesh: an explicit k grid for the Fourier inversion instead of the one
            ``image_range`` implies (``block_cutoff = inf`` then keeps every translation
            class: the blocks reproduce PySCF's ``H(k)`` on that grid exactly)
    """

    basis: str = "gth-szv-molopt-sr"
    pseudo: str = "gth-pbe"
    xc: str = "pbe"
    ke_cutoff: float = 30.0
    integrals: str = "fftdf"
    conv_tol: float = 1e-8
    max_cycle: int = 100
    block_cutoff: float = 9.0
    image_range: float = 12.0
    smearing: float = 0.0
    kmesh: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        checks = {
            "basis": isinstance(self.basis, str) and bool(self.basis),
            "pseudo": isinstance(self.pseudo, str) and bool(self.pseudo),
            "ke_cutoff": self.ke_cutoff > 0,
            "integrals": self.integrals in INTEGRALS,
            "conv_tol": self.conv_tol > 0,
            "max_cycle": self.max_cycle >= 1,
            "block_cutoff": self.block_cutoff > 0,
            "image_range": self.kmesh is not None or self.image_range >= self.block_cutoff,
            "kmesh": self.kmesh is None
            or (len(self.kmesh) == 3 and all(int(n) >= 1 for n in self.kmesh)),
            "smearing": self.smearing >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                extra = {
                    "image_range": " (must be >= block_cutoff)",
                    "integrals": f" (one of {', '.join(INTEGRALS)})",
                }.get(name, "")
                value = getattr(self, name)
                raise InputError(f"pyscf-pbc {name} has an invalid value {value!r}{extra}")


@dataclass(frozen=True, eq=False)
class PbcResult:
    """Real-space blocks (eV, our convention) of one periodic structure.

    Attributes:
        hamiltonian, overlap: blocks of pairs within ``block_cutoff`` (nearest images)
        kmesh: the k grid used for the Fourier inversion
        dropped_max: largest ``|H|`` (eV) of the pairs beyond ``block_cutoff``
        n_electrons: valence electrons (GTH); valence: per element; timings in seconds
    """

    basis: OrbitalBasis
    hamiltonian: BlockSet
    overlap: BlockSet
    energy: float
    converged: bool
    n_electrons: int
    valence: dict[str, int]
    kmesh: tuple[int, int, int]
    dropped_max: float
    scf_seconds: float
    bloch_seconds: float


def _cell_heights(cell: np.ndarray) -> np.ndarray:
    vol = abs(float(np.linalg.det(cell)))
    return np.array(
        [vol / np.linalg.norm(np.cross(cell[(a + 1) % 3], cell[(a + 2) % 3])) for a in range(3)]
    )


def bloch_grid(cell: np.ndarray, block_cutoff: float, image_range: float) -> tuple[int, int, int]:
    """Smallest ``N_a`` per direction with ``N_a * height_a >= block_cutoff + image_range``."""
    h = _cell_heights(np.asarray(cell, dtype=np.float64))
    n = [max(1, math.ceil((block_cutoff + image_range) / float(x) - 1e-9)) for x in h]
    return (n[0], n[1], n[2])


def _build_cell(atoms: Any, cfg: PbcConfig, name: str) -> Any:
    require_pyscf()
    from pyscf.pbc import gto

    if not np.asarray(atoms.pbc).all():
        raise InputError(f"{name}: pyscf-pbc needs a cell periodic in all three directions")
    if abs(float(np.linalg.det(atoms.cell.array))) < 1e-6:
        raise InputError(f"{name}: the cell has no volume")
    cell = gto.Cell()
    symbols = atoms.get_chemical_symbols()
    cell.atom = [(s, tuple(map(float, p))) for s, p in zip(symbols, atoms.positions, strict=True)]
    cell.a = np.asarray(atoms.cell.array, dtype=np.float64)
    cell.unit = "Angstrom"
    cell.basis = cfg.basis
    cell.pseudo = cfg.pseudo
    cell.ke_cutoff = cfg.ke_cutoff
    cell.verbose = 0
    cell.cart = False
    try:
        with warnings.catch_warnings():  # "try basis-set-exchange" for unknown names
            warnings.simplefilter("ignore", UserWarning)
            cell.build()
    except (KeyError, RuntimeError, ValueError, AssertionError) as exc:
        raise InputError(
            f"{name}: PySCF cannot build the cell with basis {cfg.basis!r} / pseudo "
            f"{cfg.pseudo!r}: {type(exc).__name__}: {exc}"
        ) from None
    if cell.nelectron % 2:
        raise InputError(
            f"{name}: {cell.nelectron} valence electrons (odd): restricted KS needs an even number"
        )
    return cell


def _nearest_images(
    positions: np.ndarray, lattice: np.ndarray, kmesh: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """For every translation class ``c`` (``0 <= c_a < N_a``) and pair ``(i, j)``, the
    translation ``R ≡ c (mod N)`` nearest ``pos_j + R @ cell - pos_i`` and its length.

    Shapes:
        returns: ``[n_class, n, n, 3]`` int64 and ``[n_class, n, n]`` float64
    """
    mesh = np.asarray(kmesh)
    classes = np.array(
        [(a, b, c) for a in range(mesh[0]) for b in range(mesh[1]) for c in range(mesh[2])],
        dtype=np.int64,
    )
    moves = np.array(
        [(a, b, c) for a in (-2, -1, 0, 1) for b in (-2, -1, 0, 1) for c in (-2, -1, 0, 1)],
        dtype=np.int64,
    )
    cand = classes[:, None, :] + moves[None, :, :] * mesh  # [n_class, n_move, 3]
    diff = positions[None, :, :] - positions[:, None, :]  # [i, j, 3]: pos_j - pos_i
    vec = (cand @ lattice)[:, :, None, None, :] + diff[None, None]
    dist = np.linalg.norm(vec, axis=-1)  # [n_class, n_move, n, n]
    best = dist.argmin(axis=1)  # [n_class, n, n]
    r = np.take_along_axis(cand[:, :, None, None, :], best[:, None, :, :, None], axis=1)[:, 0]
    return r, np.take_along_axis(dist, best[:, None], axis=1)[:, 0]


def _real_space(mats_k: np.ndarray, frac_k: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``M(c) = 1/Nk Σ_k exp(-2πi k·c) M(k)`` (real part; the imaginary part is round-off).

    Shapes:
        mats_k: ``[Nk, n_orb, n_orb]`` complex; frac_k: ``[Nk, 3]``; classes: ``[n_class, 3]``
    """
    phase = np.exp(-2j * np.pi * classes @ frac_k.T) / len(frac_k)
    return np.einsum("ck,kij->cij", phase, mats_k).real


def gamma_scf(atoms: Any, cfg: PbcConfig, *, name: str = "structure") -> Any:
    """The Γ-point RKS object of ``atoms`` (ASE, periodic), not yet run."""
    require_pyscf()
    from pyscf.pbc import dft

    cell = _build_cell(atoms, cfg, name)
    mf = dft.RKS(cell)
    mf.xc = cfg.xc
    mf.conv_tol = cfg.conv_tol
    mf.max_cycle = cfg.max_cycle
    if cfg.integrals == "multigrid":
        from pyscf.pbc.dft import multigrid

        mf._numint = multigrid.MultiGridNumInt(cell)
    if cfg.smearing > 0:
        from pyscf.pbc.scf.addons import smearing_

        mf = smearing_(mf, sigma=cfg.smearing, method="fermi")
    return mf


def run_pbc(atoms: Any, cfg: PbcConfig, *, name: str = "structure", scf: Any = None) -> PbcResult:
    """Γ-point RKS of ``atoms`` (ASE, periodic) and its real-space ``H(R)``, ``S(R)`` blocks.

    ``scf``: a :func:`gamma_scf` object to use (run here if it has not been).
    """
    mf = gamma_scf(atoms, cfg, name=name) if scf is None else scf
    cell = mf.cell
    t0 = time.perf_counter()
    energy = float(mf.kernel()) if mf.e_tot == 0 else float(mf.e_tot)
    t1 = time.perf_counter()
    dm = mf.make_rdm1()
    lattice = np.asarray(atoms.cell.array, dtype=np.float64)
    kmesh = (
        bloch_grid(lattice, cfg.block_cutoff, cfg.image_range)
        if cfg.kmesh is None
        else (int(cfg.kmesh[0]), int(cfg.kmesh[1]), int(cfg.kmesh[2]))
    )
    classes = np.array(
        [(a, b, c) for a in range(kmesh[0]) for b in range(kmesh[1]) for c in range(kmesh[2])],
        dtype=np.int64,
    )
    # k in the Γ-centred zone, (-1/2, 1/2]: PySCF's H(k + G) equals H(k) only up to its
    # FFT grid, and with -k in the set the inverse sum is real (time reversal) exactly
    mesh = np.asarray(kmesh, dtype=np.int64)
    frac = (np.mod(classes + (mesh - 1) // 2, mesh) - (mesh - 1) // 2) / mesh
    kpts = cell.get_abs_kpts(frac)
    # multigrid's potential at kpts_band keeps the density matrix's shape unless it has
    # a k axis (PySCF 2.x), so the Γ density is given one
    veff_dm = dm[None] if cfg.integrals == "multigrid" else dm
    fock_k = np.asarray(mf.get_hcore(cell, kpts)) + np.asarray(
        mf.get_veff(cell, veff_dm, kpts_band=kpts)
    )
    ovlp_k = np.asarray(cell.pbc_intor("int1e_ovlp", hermi=1, kpts=kpts))
    h_c = _real_space(fock_k.reshape(len(kpts), cell.nao, cell.nao), frac, classes) * HARTREE
    s_c = _real_space(ovlp_k.reshape(len(kpts), cell.nao, cell.nao), frac, classes)
    t2 = time.perf_counter()

    from ase.data import atomic_numbers

    species = np.array(
        [atomic_numbers[cell.atom_pure_symbol(i)] for i in range(cell.natm)], dtype=np.int64
    )
    basis = OrbitalBasis.from_pyscf(cell)
    offs = basis.offsets(species)
    shifts, dist = _nearest_images(np.asarray(atoms.positions, dtype=np.float64), lattice, kmesh)
    keys, hb, sb = [], [], []
    dropped = 0.0
    n = len(species)
    for c in range(len(classes)):
        for i in range(n):
            for j in range(n):
                blk = h_c[c, offs[i] : offs[i + 1], offs[j] : offs[j + 1]]
                if dist[c, i, j] > cfg.block_cutoff:
                    dropped = max(dropped, float(np.abs(blk).max()))
                    continue
                keys.append((*shifts[c, i, j].tolist(), i, j))
                hb.append(blk.copy())
                sb.append(s_c[c, offs[i] : offs[i + 1], offs[j] : offs[j + 1]].copy())
    order = np.lexsort(np.array(keys).T[::-1])
    pairs = np.array(keys, dtype=np.int64)[order]
    h_set = BlockSet(species=species, atom_pairs=pairs, blocks=tuple(hb[k] for k in order))
    s_set = BlockSet(species=species, atom_pairs=pairs, blocks=tuple(sb[k] for k in order))
    return PbcResult(
        basis=basis,
        hamiltonian=h_set.convert(basis, "pyscf"),
        overlap=s_set.convert(basis, "pyscf"),
        energy=energy * HARTREE,
        converged=bool(mf.converged),
        n_electrons=int(cell.nelectron),
        valence={
            cell.atom_pure_symbol(i): round(float(cell.atom_charge(i))) for i in range(cell.natm)
        },
        kmesh=kmesh,
        dropped_max=dropped,
        scf_seconds=t1 - t0,
        bloch_seconds=t2 - t1,
    )


@dataclass(frozen=True, kw_only=True)
class PbcDatasetConfig:
    """Perturbed copies of periodic structures: ``n_configs`` per input structure.

    Attributes:
        rattle: standard deviation of Gaussian displacements, Å
        strain: each component of a symmetric strain tensor is uniform in ``±strain``
            (0.02 = 2 %); the cell and positions are deformed by ``I + ε``
        repeat: supercell of each input before perturbing
        seed: configuration ``c`` of structure ``s`` uses seed ``(seed, s, c)``
        include_original: the first configuration of each structure is unperturbed
    """

    pbc: PbcConfig
    n_configs: int = 1
    rattle: float = 0.05
    strain: float = 0.0
    repeat: tuple[int, int, int] = (1, 1, 1)
    seed: int = 0
    include_original: bool = True

    def __post_init__(self) -> None:
        check_sampling(self.n_configs, self.rattle)
        if not 0 <= self.strain < 0.2:
            raise InputError(f"strain must be in [0, 0.2), got {self.strain!r}")
        reps = tuple(int(r) for r in self.repeat)
        if len(reps) != 3 or min(reps) < 1:
            raise InputError(f"repeat needs three integers >= 1, got {list(self.repeat)}")
        object.__setattr__(self, "repeat", reps)


def perturbed_cell(atoms: Any, cfg: PbcDatasetConfig, s: int, c: int) -> Any:
    """Configuration ``c`` of structure ``s``: repeated, strained, rattled (deterministic)."""
    out = atoms.repeat(cfg.repeat) if cfg.repeat != (1, 1, 1) else atoms.copy()
    if c == 0 and cfg.include_original:
        return out
    rng = np.random.default_rng([cfg.seed, s, c])
    eps = rng.uniform(-cfg.strain, cfg.strain, size=(3, 3))
    eps = 0.5 * (eps + eps.T)
    out.set_cell(out.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    out.positions = out.positions + rng.normal(scale=cfg.rattle, size=out.positions.shape)
    return out


_TIMING_FIELDS = (
    "file",
    "atoms",
    "orbitals",
    "kmesh",
    "scf_s",
    "bloch_s",
    "total_s",
    "blocks",
    "converged",
)


def generate_pbc_dataset(
    structures: Sequence[Any],
    out: str | Path,
    cfg: PbcDatasetConfig,
    *,
    stop_on_failure: bool = False,
    progress: Callable[[int], Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, list[str]]:
    """One block file per configuration into ``out`` (resumable); returns
    written/existing/failed file names.

    ``out/dataset.json`` records the settings and must match on resume;
    ``out/timings.csv`` gets one row per computed structure. An SCF that does not
    converge is logged in one line naming the structure and skipped (or, with
    ``stop_on_failure``, raises :class:`InputError`). SIGTERM stops after the current
    structure.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"config": config_to_dict(cfg), "n_structures": len(structures), "kind": "pyscf-pbc"}
    mpath = out / "dataset.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        # data sets written before the option existed were made with FFTDF
        old.get("config", {}).get("pbc", {}).setdefault("integrals", "fftdf")
        if old != json.loads(json.dumps(manifest)):
            raise InputError(
                f"{out} holds a data set made with other settings ({mpath}); "
                "use another folder or the same settings to resume"
            )
    else:
        tmp = mpath.with_name(mpath.name + ".partial")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(mpath)
    tpath = out / "timings.csv"
    if not tpath.exists():
        tpath.write_text(",".join(_TIMING_FIELDS) + "\n")
    report: dict[str, list[str]] = {"written": [], "existing": [], "failed": []}
    with StopOnSigterm() as stop:
        for s, atoms in enumerate(structures):
            for c in range(cfg.n_configs):
                name = f"{s * cfg.n_configs + c:05d}.h5"
                if stop.received:
                    log(f"SIGTERM: stopped before {name}; rerun the same command to resume")
                    return report
                if (out / name).exists():
                    report["existing"].append(name)
                    if progress is not None:
                        progress(1)
                    continue
                geo = perturbed_cell(atoms, cfg, s, c)
                where = f"structure {s} configuration {c} ({name}, {geo.get_chemical_formula()})"
                res = run_pbc(geo, cfg.pbc, name=where)
                total = res.scf_seconds + res.bloch_seconds
                with tpath.open("a") as f:
                    row = [
                        name,
                        len(geo),
                        int(res.basis.offsets(res.hamiltonian.species)[-1]),
                        "x".join(map(str, res.kmesh)),
                        f"{res.scf_seconds:.1f}",
                        f"{res.bloch_seconds:.1f}",
                        f"{total:.1f}",
                        res.hamiltonian.n_blocks,
                        int(res.converged),
                    ]
                    f.write(",".join(map(str, row)) + "\n")
                if not res.converged:
                    msg = (
                        f"{where}: SCF did not converge in {cfg.pbc.max_cycle} cycles "
                        f"({total:.0f} s)"
                    )
                    if stop_on_failure:
                        raise InputError(msg)
                    log(msg + "; skipped")
                    report["failed"].append(name)
                else:
                    write_block_file(
                        out / name,
                        basis=res.basis,
                        positions=geo.positions,
                        cell=geo.cell.array,
                        pbc=np.ones(3, dtype=bool),
                        matrices={"H": res.hamiltonian, "S": res.overlap},
                        energy=res.energy,
                        metadata={
                            "source": "pyscf-pbc",
                            "n_electrons": res.n_electrons,
                            "valence_electrons": res.valence,
                            "kmesh": list(res.kmesh),
                            "dropped_max_eV": res.dropped_max,
                            "scf_seconds": res.scf_seconds,
                            "bloch_seconds": res.bloch_seconds,
                            **{k: v for k, v in config_to_dict(cfg.pbc).items()},
                        },
                    )
                    log(
                        f"{name}: {len(geo)} atoms, SCF {res.scf_seconds:.1f} s, H(k) on "
                        f"{'x'.join(map(str, res.kmesh))} k {res.bloch_seconds:.1f} s, "
                        f"{res.hamiltonian.n_blocks} blocks, largest dropped "
                        f"|H| {res.dropped_max * 1000:.2f} meV"
                    )
                    report["written"].append(name)
                if progress is not None:
                    progress(1)
    return report
