"""``atomshard predict``: predicted Hamiltonians, per-block errors against references, plots.

With ``--ranks N``, ``--repeat``, ``--eigs`` or under torchrun/srun the structures go through
the graph-parallel path (:mod:`atomshard.commands.predict_parallel`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from atomshard.commands._common import add_repeat_argument, parse_repeat


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        help="block files (.h5; errors against their H), folders of them, DeePTB folders, or "
        "any ASE-readable structure file (prediction only)",
    )
    parser.add_argument(
        "--model",
        required=True,
        action="append",
        help="Hamiltonian checkpoint (best.pt); repeated (--model a.pt --model b.pt): a "
        "committee, the mean of their blocks (one basis and cutoff; with --ranks too)",
    )
    parser.add_argument("--out", "-o", required=True, help="output folder")
    parser.add_argument(
        "--format",
        choices=["h5", "npz"],
        default="h5",
        help="h5: DeepH-style blocks H(R); npz: CSR of the Γ-point H (default h5)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    _add_parallel_arguments(parser)


def _add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    from atomshard.commands._parallel import add_parallel_arguments

    add_parallel_arguments(parser)
    group = parser.add_argument_group("large structures")
    add_repeat_argument(
        group,
        help="tile every structure before predicting (periodic directions only; "
        "the input's H and S are tiled with it, for errors and eigenvalues)",
    )
    group.add_argument(
        "--eigs",
        type=int,
        default=0,
        metavar="K",
        help="the K Γ eigenvalues nearest --sigma by sparse shift-invert (generalized with "
        "the input's S when it has one) -> NAME.eigs_near.txt",
    )
    group.add_argument(
        "--sigma", type=float, default=0.0, help="energy (eV) the --eigs are nearest to"
    )
    group.add_argument(
        "--edge-chunk",
        type=int,
        default=0,
        metavar="N",
        help="process edges in chunks of N (bounded memory for large structures, same "
        "numbers; 0: all at once; 4096 is a good CPU choice)",
    )


def _parallel_requested(args: argparse.Namespace) -> bool:
    """True when ``predict`` should run through the graph-parallel runtime."""
    from atomshard.commands._parallel import parallel_requested

    return parallel_requested(args) or args.repeat is not None or args.eigs > 0


def _inputs(items: list[str], basis):  # type: ignore[no-untyped-def]
    """``(name, BlockFile)`` for block files / DeePTB folders, or structures without H."""
    from atomshard.hamiltonian.files import BlockFile
    from atomshard.io.structures import read_structures
    from atomshard.models.hamiltonian.data import expand_paths, read_any

    for item in items:
        p = Path(item)
        if p.suffix in (".h5", ".hdf5", ".npz") or p.is_dir() or not p.exists():
            for path in expand_paths(item):
                yield (path.stem if path.is_file() else path.name), read_any(path)
        else:
            frames = read_structures(item)
            for n, atoms in enumerate(frames):
                suffix = f"_{n}" if len(frames) > 1 else ""
                yield f"{p.stem}{suffix}", BlockFile.from_ase(atoms, basis)


def _plot_bands(path: Path, sample, blocks, model) -> None:  # type: ignore[no-untyped-def]
    """Predicted vs reference bands along the cell's standard path, near the gap."""
    import numpy as np

    from atomshard.hamiltonian.assembly import band_structure, kpath, plot_bands

    k, x, special = kpath(sample.source.cell, npoints=40)
    s = sample.source.matrices["S"]
    ref = band_structure(sample.source.matrices["H"], s, model.basis, k)
    pred = band_structure(blocks, s, model.basis, k)
    mid = float(np.median(ref))
    plot_bands(
        path,
        x,
        {"reference": ref, "predicted": pred},
        special=special,
        window=(mid - 10.0, mid + 10.0),
        title=path.stem,
    )


def _edge_errors(name: str, sample, blocks, model) -> dict[str, object] | None:  # type: ignore[no-untyped-def]
    """Band-edge errors with the reference S, printed (meV): a molecule's HOMO, LUMO, gap
    and occupied-orbital MAE; a crystal's VBM, CBM, gap and band MAE within 2 eV of the
    gap at Γ, X, M, R. None when the file lacks S or its electron count is unknown."""
    from atomshard.errors import InputError
    from atomshard.hamiltonian.metrics import (
        DEFAULT_KPOINTS,
        band_errors,
        electrons_of,
        orbital_errors,
    )

    src = sample.source
    if "S" not in src.matrices:
        return None
    try:
        n_el = electrons_of(src, name)
        if src.pbc.any():
            e = band_errors(blocks, src.matrices["H"], src.matrices["S"], model.basis, n_el,
                            DEFAULT_KPOINTS)  # fmt: skip
            print(
                f"   bands at Γ, X, M, R (reference S): VBM {1000 * e['vbm_error']:+.1f}, CBM "
                f"{1000 * e['cbm_error']:+.1f}, gap {1000 * e['gap_error']:+.1f} meV; band MAE "
                f"within 2 eV of the gap {1000 * e['band_mae_window']:.1f} meV"
            )
        else:
            e = orbital_errors(blocks, src.matrices["H"], src.matrices["S"], model.basis, n_el)
            print(
                f"   orbitals (reference S): HOMO {1000 * e['homo_error']:+.1f}, LUMO "
                f"{1000 * e['lumo_error']:+.1f}, gap {1000 * e['gap_error']:+.1f} meV; "
                f"occupied MAE {1000 * e['occupied_mae']:.2f} meV "
                f"(max {1000 * e['occupied_max']:.1f})"
            )
    except InputError as exc:
        print(f"   band edges skipped: {exc}")
        return None
    return {"structure": name, **e}


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from atomshard.models.hamiltonian.committee import load_predictor
    from atomshard.models.hamiltonian.data import make_sample
    from atomshard.models.hamiltonian.predict import (
        error_table,
        gamma_eigenvalues,
        plot_errors,
        plot_magnitude_vs_distance,
        predict_sample,
        write_csr,
        write_prediction,
        write_table,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = list(args.model) if isinstance(args.model, list) else [args.model]
    model = load_predictor(paths)
    if len(paths) > 1:
        print(f"committee of {len(paths)} models: the mean of their blocks")
    model.set_memory(edge_chunk=args.edge_chunk)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if _parallel_requested(args):
        return _run_parallel(args, paths, list(_inputs(args.inputs, model.basis)))
    all_rows, edge_rows = [], []
    for name, source in _inputs(args.inputs, model.basis):
        sample = make_sample(name, source, model.basis, model.cutoff, required=False)
        pred = predict_sample(model, sample)
        if args.format == "h5":
            blocks = write_prediction(out / f"{name}.pred.h5", model, sample, pred)
        else:
            blocks = pred.to_blockset(sample.graph)
            write_csr(out / f"{name}.pred.npz", blocks, model)
        rows = error_table(pred, sample)
        if not rows:
            print(
                f"== {name}: {sample.graph.n_atoms} atoms, {sample.graph.n_edges} edges "
                "(no reference H)"
            )
            continue
        for r in rows:
            r["structure"] = name
        all_rows += rows
        print(f"== {name}: {sample.graph.n_atoms} atoms, {sample.graph.n_edges} edges")
        print(write_table(out / f"{name}.errors.csv", rows))
        if sample.uncovered_max > 0:
            print(f"   reference blocks beyond the cutoff: max |H| {sample.uncovered_max:.3g} eV")
        e_pred = gamma_eigenvalues(blocks, sample, model)
        if e_pred is not None:
            e_ref = gamma_eigenvalues(sample.source.matrices["H"], sample, model)
            assert e_ref is not None
            err = np.abs(e_pred - e_ref)
            print(
                f"   Γ eigenvalues: MAE {1000 * err.mean():.2f} meV, max {1000 * err.max():.2f} meV"
            )
            np.savetxt(
                out / f"{name}.gamma_eigenvalues.txt",
                np.column_stack([e_ref, e_pred]),
                header="reference_eV predicted_eV",
            )
        edges = _edge_errors(name, sample, blocks, model)
        if edges is not None:
            edge_rows.append(edges)
        if not args.no_plots and sample.source.pbc.any() and "S" in sample.source.matrices:
            _plot_bands(out / f"{name}.bands.png", sample, blocks, model)
        if not args.no_plots:
            plot_magnitude_vs_distance(out / f"{name}.h_vs_distance.png", pred, sample)
            plot_errors(out / f"{name}.errors.png", pred, sample)
    if all_rows:
        import csv

        with (out / "errors.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(all_rows[0]))
            w.writeheader()
            w.writerows(all_rows)
    if edge_rows:
        import csv

        keys = sorted({k for r in edge_rows for k in r}, key=lambda k: (k != "structure", k))
        with (out / "band_edges.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(edge_rows)
    return 0


def _run_parallel(args: argparse.Namespace, model_paths: list[str], inputs: list) -> int:  # type: ignore[type-arg]
    """Predict ``inputs`` (``(name, BlockFile)``) across ranks, print a summary per structure."""
    import json

    from atomshard.commands.predict_parallel import PredictOptions, predict_distributed
    from atomshard.runtime import format_profile
    from atomshard.utils.files import atomic_write

    options = PredictOptions(
        formats=(args.format,),
        partition=args.partition,
        transport=args.transport,
        repeat=parse_repeat(args.repeat),
        n_eigs=args.eigs,
        sigma=args.sigma,
        profile=args.profile is not None,
        edge_chunk=args.edge_chunk,
    )
    results = predict_distributed(model_paths, inputs, args.out, options, n_ranks=args.ranks)
    if results is None:  # another rank of a torchrun job
        return 0
    for res in results:
        ranks = res["ranks"]
        print(
            f"== {res['name']}: {res['n_atoms']} atoms on {len(ranks)} rank(s), "
            f"{sum(r['edges'] for r in ranks)} edges "
            f"(+{sum(r['reverse_edges'] for r in ranks)} reverse boundary edges recomputed)"
        )
        print(
            f"   predict {max(r['predict_s'] for r in ranks):.2f} s (slowest rank), "
            f"write parts {max(r['write_s'] for r in ranks):.2f} s, merge {res['merge_s']:.2f} s"
        )
        for key in ("h5", "npz"):
            if key in res:
                print(f"   wrote {res[key]}")
        if res.get("errors"):
            e = res["errors"]
            print(
                f"   MAE {e['mae_meV']:.3f} meV (node {e['mae_node_meV']:.3f}, "
                f"edge {e['mae_edge_meV']:.3f})"
            )
        if "eigenvalues" in res:
            vals = " ".join(f"{v:.4f}" for v in res["eigenvalues"])
            print(f"   Γ eigenvalues nearest {args.sigma} eV: {vals}")
        if args.profile is not None:
            print(format_profile(ranks))
    if args.profile is not None:
        with atomic_write(str(Path(args.profile))) as handle:
            handle.write(json.dumps(results, indent=2, default=str))
        print(f"wrote per-rank timings to {args.profile}")
    return 0
