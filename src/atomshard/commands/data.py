"""``atomshard data``: make training data (``atomshard data pyscf ...``, ``data pyscf-pbc ...``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    p = sub.add_parser(
        "pyscf",
        help="Kohn-Sham H and S of rattled molecules with PySCF, one block file each",
        description="Restricted Kohn-Sham H, S and energies with PySCF for rattled copies "
        "of molecules or clusters; one DeepH-style .h5 per configuration (eV, our orbital "
        "order). Resumable: finished files are kept; unconverged runs are reported and "
        "skipped.",
    )
    p.add_argument(
        "structures",
        help="ASE-readable file (all frames), a built-in name (water) or an ASE molecule "
        "name (H2O, CH3CH2OH, ...)",
    )
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--basis", default="sto-3g", help="Gaussian basis (default sto-3g)")
    p.add_argument("--xc", default="pbe", help="functional (default pbe)")
    p.add_argument("--charge", type=int, default=0)
    p.add_argument("--n-configs", type=int, default=1, help="configurations per structure")
    p.add_argument("--rattle", type=float, default=0.05, help="displacement sigma, Å")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-original",
        action="store_true",
        help="rattle the first configuration too (by default it is the input geometry)",
    )
    p.add_argument("--conv-tol", type=float, default=1e-9, help="SCF tolerance, Hartree")
    p.add_argument("--max-cycle", type=int, default=100, help="SCF iteration limit")
    p.add_argument("--grid-level", type=int, default=3, help="DFT grid level 0..9")
    _add_pbc_arguments(sub)


def _add_pbc_arguments(sub) -> None:  # type: ignore[no-untyped-def]
    q = sub.add_parser(
        "pyscf-pbc",
        help="Gamma-point periodic Kohn-Sham H(R) and S(R) with PySCF PBC, one block file each",
        description="Gamma-point restricted Kohn-Sham (GTH pseudopotentials, GTH basis) of "
        "strained and rattled copies of periodic structures with PySCF PBC; real-space "
        "H(R), S(R) blocks of all atom pairs (nearest images) within --block-cutoff, in "
        "eV and our orbital order, one DeepH-style .h5 per configuration. Resumable: "
        "finished files are kept; an SCF that does not converge is reported in one line "
        "and skipped (--stop-on-failure stops instead); out/timings.csv lists the time "
        "per structure.",
    )
    q.add_argument(
        "structures",
        help="ASE-readable periodic file (all frames) or a built-in (si, quartz, hfo2)",
    )
    q.add_argument("--out", "-o", required=True, help="output folder")
    q.add_argument(
        "--basis", default="gth-szv-molopt-sr", help="GTH basis (default gth-szv-molopt-sr)"
    )
    q.add_argument("--pseudo", default="gth-pbe", help="pseudopotential (default gth-pbe)")
    q.add_argument("--xc", default="pbe", help="functional (default pbe)")
    q.add_argument("--ke-cutoff", type=float, default=30.0, help="FFT grid cutoff, Hartree")
    q.add_argument(
        "--integrals",
        choices=("fftdf", "multigrid"),
        default="fftdf",
        help="Coulomb + XC on one FFT grid (fftdf, default) or PySCF's multigrid (faster; "
        "with --ke-cutoff 200 the on-site blocks of O and other hard pseudopotentials no "
        "longer depend on where the atom sits on the grid: use it for oxides)",
    )
    q.add_argument(
        "--block-cutoff", type=float, default=9.0, help="write blocks of pairs within, Å"
    )
    q.add_argument(
        "--image-range",
        type=float,
        default=12.0,
        help="Å: the k grid of the Fourier inversion puts aliased images at least this "
        "far beyond --block-cutoff (default 12)",
    )
    q.add_argument("--smearing", type=float, default=0.0, help="Fermi smearing, Hartree")
    q.add_argument("--n-configs", type=int, default=1, help="configurations per structure")
    q.add_argument("--rattle", type=float, default=0.05, help="displacement sigma, Å")
    q.add_argument("--strain", type=float, default=0.0, help="max strain component (0.02 = 2%%)")
    q.add_argument("--repeat", default="1x1x1", help="supercell AxBxC before perturbing")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--no-original",
        action="store_true",
        help="perturb the first configuration too (by default it is the input geometry)",
    )
    q.add_argument("--conv-tol", type=float, default=1e-8, help="SCF tolerance, Hartree")
    q.add_argument("--max-cycle", type=int, default=100, help="SCF iteration limit")
    q.add_argument(
        "--stop-on-failure",
        action="store_true",
        help="stop at the first SCF that does not converge (default: report, skip, go on)",
    )


def _read_inputs(text: str) -> list:
    from pathlib import Path

    from atomshard.io.structures import BUILTIN_STRUCTURES, read_structures

    if Path(text).exists() or text.lower() in BUILTIN_STRUCTURES:
        return read_structures(text)
    from ase.build import molecule
    from ase.collections import g2

    if text in g2.names:
        return [molecule(text)]
    return read_structures(text)  # raises a clear "no such file" error


def _repeat(text: str) -> tuple[int, int, int]:
    from atomshard.errors import InputError

    parts = text.lower().replace(",", "x").split("x")
    try:
        reps = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--repeat must look like 2x2x2, got {text!r}") from None
    if len(reps) == 1:
        reps = reps * 3
    if len(reps) != 3:
        raise InputError(f"--repeat must look like 2x2x2, got {text!r}")
    return (reps[0], reps[1], reps[2])


def _run_pbc(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atomshard.hamiltonian.pyscf_pbc import PbcConfig, PbcDatasetConfig, generate_pbc_dataset

    cfg = PbcDatasetConfig(
        pbc=PbcConfig(
            basis=args.basis,
            pseudo=args.pseudo,
            xc=args.xc,
            ke_cutoff=args.ke_cutoff,
            integrals=args.integrals,
            conv_tol=args.conv_tol,
            max_cycle=args.max_cycle,
            block_cutoff=args.block_cutoff,
            image_range=args.image_range,
            smearing=args.smearing,
        ),
        n_configs=args.n_configs,
        rattle=args.rattle,
        strain=args.strain,
        repeat=_repeat(args.repeat),
        seed=args.seed,
        include_original=not args.no_original,
    )
    structures = _read_inputs(args.structures)
    total = len(structures) * cfg.n_configs
    with tqdm(total=total, desc="pyscf-pbc", unit="cell") as bar:
        report = generate_pbc_dataset(
            structures,
            args.out,
            cfg,
            stop_on_failure=args.stop_on_failure,
            progress=bar.update,
            log=bar.write,
        )
    print(
        f"{len(report['written'])} written, {len(report['existing'])} already present, "
        f"{len(report['failed'])} not converged (skipped) in {args.out} "
        f"(time per structure: {args.out}/timings.csv)"
    )
    return 0 if not report["failed"] else 1


def run(args: argparse.Namespace) -> int:
    if args.source == "pyscf-pbc":
        return _run_pbc(args)
    from tqdm import tqdm

    from atomshard.hamiltonian.pyscf_data import DatasetConfig, PyscfConfig, generate_dataset

    cfg = DatasetConfig(
        pyscf=PyscfConfig(
            basis=args.basis,
            xc=args.xc,
            charge=args.charge,
            conv_tol=args.conv_tol,
            max_cycle=args.max_cycle,
            grid_level=args.grid_level,
        ),
        n_configs=args.n_configs,
        rattle=args.rattle,
        seed=args.seed,
        include_original=not args.no_original,
    )
    structures = _read_inputs(args.structures)
    total = len(structures) * cfg.n_configs
    with tqdm(total=total, desc="pyscf", unit="config") as bar:
        report = generate_dataset(structures, args.out, cfg, progress=bar.update, log=bar.write)
    print(
        f"{len(report['written'])} written, {len(report['existing'])} already present, "
        f"{len(report['failed'])} not converged (skipped) in {args.out}"
    )
    return 0 if not report["failed"] else 1
