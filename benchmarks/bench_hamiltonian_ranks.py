"""Forward pass of the seed-size SO(2) Hamiltonian model on amorphous HfO2, 1 and N ranks.

The seed's headline structure: ~3,000-atom a-HfO2 at r_cut 12 Å (≈1.8 M edges), an
SZV-like basis (Hf ``2s1p1d`` = 10 orbitals, O ``1s1p`` = 4), l_max 4, E 16, hidden 32,
3 layers, float32 body, random weights (``torch.manual_seed(0)``), edges in chunks.
For each rank count: Low-NN split on rank 0, then every rank runs the forward pass on
its owned atoms, incoming edges, the reverse of its boundary edges and its halo (one
thread per rank). Reports the slowest rank's forward time, CPU time, peak RSS per rank
(``VmHWM``) and strong-scaling efficiency; writes JSON and PNG.

    python benchmarks/bench_hamiltonian_ranks.py --out bench_out/hfo2_ranks        # full size
    python benchmarks/bench_hamiltonian_ranks.py --smoke --out /tmp/x               # seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

SZV = {"Hf": "2s1p1d", "O": "1s1p"}


def _hwm_gib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 2**20
    return 0.0


def rank_main(comm: Any, units: int, cutoff: float, chunk: int, partition: str) -> dict[str, Any]:
    import torch

    from atomshard.comm import HaloExchange
    from atomshard.graph import Structure
    from atomshard.io.amorphous import amorphous_hfo2
    from atomshard.models.hamiltonian import HamiltonianConfig, HamiltonianModel
    from atomshard.runtime.hamiltonian import predict_part, split_hamiltonian

    torch.manual_seed(0)
    cfg = HamiltonianConfig(basis=SZV, cutoff=cutoff, l_max=4, channels=16, hidden=32, n_layers=3)
    model = HamiltonianModel(cfg).eval()
    model.set_memory(edge_chunk=chunk)
    parts = None
    if comm.rank == 0:
        structure = Structure.from_ase(amorphous_hfo2(units, seed=0))
        parts = split_hamiltonian(structure, cutoff, comm.world_size, partition)
    part = comm.scatter_objects(parts)
    del parts
    exchange = HaloExchange(part.plan, comm)
    graph = part.graph()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        predict_part(model, part, exchange, graph=graph)
    return {
        "rank": comm.rank,
        "atoms": part.plan.n_owned,
        "halo": part.plan.n_halo,
        "owned_edges": part.n_owned_edges,
        "edges": int(graph.n_edges),
        "forward_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "peak_gib": _hwm_gib(),
    }


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    labels = [str(r["ranks"]) for r in rows]
    a.bar(labels, [r["forward_s"] for r in rows])
    a.set_xlabel("ranks")
    a.set_ylabel("forward pass, slowest rank (s)")
    b.bar(labels, [r["peak_gib"] for r in rows], color="tab:orange")
    b.set_xlabel("ranks")
    b.set_ylabel("peak RSS per rank (GiB)")
    fig.suptitle(f"SO(2) model, a-HfO2 {rows[0]['atoms']} atoms, {rows[0]['edges']} edges")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from atomshard.comm import launch
    from atomshard.utils.files import atomic_write

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_out/hamiltonian_ranks")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--formula-units", type=int, default=1000, help="HfO2 units (3 atoms each)")
    ap.add_argument("--cutoff", type=float, default=12.0)
    ap.add_argument("--edge-chunk", type=int, default=4096)
    ap.add_argument("--partition", default="lownn")
    ap.add_argument("--smoke", action="store_true", help="30 atoms, 4 Å, 1 and 2 ranks")
    args = ap.parse_args(argv)
    if args.smoke:
        args.formula_units, args.cutoff, args.ranks, args.edge_chunk = 10, 4.0, [1, 2], 64
    rows = []
    for n in args.ranks:
        per_rank = launch(
            rank_main, n, args.formula_units, args.cutoff, args.edge_chunk, args.partition,
            timeout_s=3600.0, threads_per_rank=1,
        )  # fmt: skip
        row = {
            "ranks": n,
            "atoms": sum(r["atoms"] for r in per_rank),
            "edges": sum(r["owned_edges"] for r in per_rank),
            "recomputed_reverse_edges": sum(r["edges"] - r["owned_edges"] for r in per_rank),
            "forward_s": max(r["forward_s"] for r in per_rank),
            "cpu_s": sum(r["cpu_s"] for r in per_rank),
            "peak_gib": max(r["peak_gib"] for r in per_rank),
            "per_rank": per_rank,
        }
        base = rows[0] if rows else row
        row["efficiency"] = base["forward_s"] * base["ranks"] / (row["forward_s"] * n)
        rows.append(row)
        print(
            f"{n} rank(s): {row['atoms']} atoms, {row['edges']} edges "
            f"(+{row['recomputed_reverse_edges']} reverse boundary edges), forward "
            f"{row['forward_s']:.2f} s (slowest rank), CPU {row['cpu_s']:.1f} s, peak RSS "
            f"{row['peak_gib']:.2f} GiB per rank, efficiency {100 * row['efficiency']:.1f} %",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"smoke": args.smoke, "cutoff": args.cutoff, "edge_chunk": args.edge_chunk,
              "partition": args.partition, "rows": rows}  # fmt: skip
    with atomic_write(str(out / "bench_hamiltonian_ranks.json")) as handle:
        handle.write(json.dumps(report, indent=2))
    _plot(out / "bench_hamiltonian_ranks.png", rows)
    print(f"wrote {out}/bench_hamiltonian_ranks.json and .png")
    return report


if __name__ == "__main__":
    main()
