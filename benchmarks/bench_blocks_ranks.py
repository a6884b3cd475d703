"""Block-by-block evaluation on ranks: memory per rank and time, against whole parts.

On ``--ranks`` local ranks (gloo, ``--threads`` each), an α-quartz n×n×n cell and a random
NequIP preset (float32 body) are evaluated (energy + forces + stress; ``--steps`` timed
after one warm-up) once with whole parts (``--block-atoms off``: the per-layer halo
exchange) and once per ``--block-atoms N`` (each rank grows its part to the receptive field
and evaluates it in blocks of at most N atoms with their halo). Every setting runs in
freshly spawned ranks, so each rank's peak RSS is that setting's. Reports per setting: the
largest rank's peak RSS, the slowest rank's median step time, the deep part's rows and the
number of blocks, and the energy (the same in every setting, to float32 round-off).
Writes ``<out>/bench_blocks_ranks.json`` and ``<out>/bench_blocks_ranks.png``.

    python benchmarks/bench_blocks_ranks.py --out bench_out/blocks-ranks --repeat 8 \\
        --block-atoms 3000 2500
    python benchmarks/bench_blocks_ranks.py --smoke --out /tmp/bbr
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def _run(args: argparse.Namespace, limit: int | None) -> dict:
    from atomshard.comm import run_on_ranks
    from atomshard.io.structures import builtin_structure
    from atomshard.runtime import as_structure

    atoms = builtin_structure("quartz", (args.repeat,) * 3)
    atoms.rattle(0.01, seed=1)
    out = run_on_ranks(
        _rank,
        args.ranks,
        args.model,
        root_only={"structure": as_structure(atoms)},
        threads_per_rank=args.threads,
        timeout_s=3600,
        steps=args.steps,
        max_atoms=limit,
        cutoff=args.cutoff,
    )
    ranks = out["ranks"]
    return {
        "block_atoms": limit,
        "atoms": len(atoms),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in ranks),
        "step_s": max(r["step_s"] for r in ranks),
        "cpu_s": max(r["cpu_s"] for r in ranks),
        "block_mode": ranks[0]["block_mode"],
        "n_local": [r["n_owned"] + r["n_halo"] for r in ranks],
        "n_deep": [r["n_deep"] for r in ranks],
        "n_blocks": [r["n_blocks"] for r in ranks],
        "energy": ranks[0]["energy"],
    }


def _rank(comm, name, *, structure, steps, max_atoms, cutoff):  # type: ignore[no-untyped-def]
    """One rank: the preset with seeded random weights (the same on every rank), timed."""
    import torch

    from atomshard.bench import time_evaluation
    from atomshard.models.potential import NequIPPotential, preset

    torch.manual_seed(0)
    extra = {} if cutoff is None else {"cutoff": cutoff}
    config = preset(name, species=(8, 14), avg_num_neighbors=30.0, dtype="float32", **extra)
    model = NequIPPotential(config)
    mine = time_evaluation(
        comm, model, structure=structure, partition="lownn", steps=steps, max_atoms=max_atoms
    )
    gathered = comm.gather_objects(mine) if comm.world_size > 1 else [mine]
    return {"ranks": gathered}


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["whole parts" if r["block_atoms"] is None else f"blocks ≤ {r['block_atoms']}"
              for r in rows]  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(labels, [r["peak_rss_mib"] / 1024 for r in rows])
    axes[0].set(ylabel="largest rank's peak RSS (GiB)", title=f"{rows[0]['atoms']} atoms")
    axes[1].bar(labels, [r["step_s"] for r in rows])
    axes[1].set(ylabel="step time, slowest rank (s)", title="energy + forces + stress")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="S", help="NequIP preset (random weights)")
    parser.add_argument("--cutoff", type=float, default=None, help="override the preset's, Å")
    parser.add_argument("--repeat", type=int, default=8, help="quartz n×n×n")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--block-atoms", type=int, nargs="+", default=[1500])
    parser.add_argument("--smoke", action="store_true", help="preset S at 2.5 Å, 3×3×3")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.cutoff, args.repeat, args.steps = "S", 2.5, 3, 1
        args.block_atoms = [140]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [_run(args, None)] + [_run(args, n) for n in args.block_atoms]
    print(f"{rows[0]['atoms']} atoms, preset {args.model}, {args.ranks} ranks × "
          f"{args.threads} thread(s), {platform.processor() or platform.machine()}")  # fmt: skip
    print(f"{'setting':>16} {'peak RSS/rank':>14} {'step s':>8} {'cpu s':>7} "
          f"{'rows/rank':>16} {'blocks':>10} {'energy eV':>16}")  # fmt: skip
    for r in rows:
        name = "whole parts" if r["block_atoms"] is None else f"blocks<={r['block_atoms']}"
        rows_txt = "/".join(str(n) for n in (r["n_deep"] if r["block_mode"] else r["n_local"]))
        blocks = "/".join(str(n) for n in r["n_blocks"]) if r["block_mode"] else "-"
        print(f"{name:>16} {r['peak_rss_mib']:>10.0f} MiB {r['step_s']:>8.2f} {r['cpu_s']:>7.2f} "
              f"{rows_txt:>16} {blocks:>10} {r['energy']:>16.6f}")  # fmt: skip
    doc = {"args": vars(args), "rows": rows}
    (out / "bench_blocks_ranks.json").write_text(json.dumps(doc, indent=1))
    _plot(rows, out / "bench_blocks_ranks.png")
    print(f"wrote {out / 'bench_blocks_ranks.json'} and .png")


if __name__ == "__main__":
    main()
