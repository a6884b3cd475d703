"""``atomshard predict --ranks N / --repeat a b c / --eigs K``: the graph-parallel path."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from atomshard.commands._parallel import add_parallel_arguments

    add_parallel_arguments(parser)
    group = parser.add_argument_group("large structures")
    group.add_argument(
        "--repeat",
        type=int,
        nargs=3,
        metavar=("A", "B", "C"),
        default=None,
        help="tile every structure A x B x C before predicting (periodic directions only; "
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


def requested(args: argparse.Namespace) -> bool:
    """True when ``predict`` should run through the graph-parallel runtime."""
    from atomshard.commands._parallel import parallel_requested

    return parallel_requested(args) or args.repeat is not None or args.eigs > 0


def run(args: argparse.Namespace, inputs: list) -> int:  # type: ignore[type-arg]
    """Predict ``inputs`` (``(name, BlockFile)``) across ranks, print a summary per structure."""
    import json

    from atomshard.runtime import format_profile
    from atomshard.runtime._hamiltonian_command import PredictOptions, predict_distributed
    from atomshard.utils.files import atomic_write

    options = PredictOptions(
        formats=(args.format,),
        partition=args.partition,
        transport=args.transport,
        repeat=tuple(args.repeat or (1, 1, 1)),  # type: ignore[arg-type]
        n_eigs=args.eigs,
        sigma=args.sigma,
        profile=args.profile is not None,
        edge_chunk=args.edge_chunk,
    )
    results = predict_distributed(args.model, inputs, args.out, options, n_ranks=args.ranks)
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
