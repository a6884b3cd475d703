"""``atomshard data``: make training data (``atomshard data pyscf ...``)."""

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


def run(args: argparse.Namespace) -> int:
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
