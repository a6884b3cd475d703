"""The largest liquid-water box one process evaluates with the seed's small Allegro.

Issue 28 asks for a ≥ 1 M-atom water box evaluated (energy + forces) by one process in
24 GiB. Allegro is strictly local (one edge hop), so a block of atoms needs only its own
atoms' edges plus the positions of the atoms one cutoff around it: block-by-block
evaluation (``atomshard.runtime.blocks``) holds one block's activations at a time and gives
the same numbers as one evaluation of the whole graph.

The box is ``n^3`` randomly oriented water molecules at 1 g/cm³ (``bench_allegro.water_box``;
n = 70 gives 1,029,000 atoms), the model the seed's small Allegro with seeded random weights
(``allegro-small``, H and O, float32 body on float64 geometry). The script times each phase
(box, neighbour list, block plan, evaluation), records the peak resident memory of the
process, and checks that energies and forces are finite. ``--check`` also compares the blocks
against one whole-graph evaluation (only where the whole graph fits).

Usage:
    python benchmarks/bench_allegro_large.py --n-side 70 --block-atoms 12000 --threads 2 \
        --out bench_out/allegro_large
    python benchmarks/bench_allegro_large.py --n-side 12 --block-atoms 3000 --check --out /tmp/al
    python benchmarks/bench_allegro_large.py --smoke --out /tmp/al_smoke     # seconds

Writes ``allegro_large.json`` into ``--out`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rss_gib() -> float:
    """Peak resident set size of this process so far, GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-side", type=int, default=70,
                   help="molecules per box edge (70: 1.03 M atoms)")  # fmt: skip
    p.add_argument("--block-atoms", type=int, default=12000,
                   help="most atoms in one block's graph, halo included")  # fmt: skip
    p.add_argument("--n-blocks", type=int, default=None,
                   help="split into this many blocks instead (ignores --block-atoms)")  # fmt: skip
    p.add_argument("--method", default="grid", choices=["grid", "lownn", "metis"],
                   help="partitioner for the blocks")  # fmt: skip
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stress", action="store_true", help="also the virial")
    p.add_argument("--check", action="store_true", help="compare with one whole evaluation")
    p.add_argument("--smoke", action="store_true", help="81 atoms, 3 blocks, float64, --check")
    p.add_argument("--out", type=Path, default=Path("bench_out/allegro_large"))
    args = p.parse_args(argv)
    if args.smoke:
        args.n_side, args.n_blocks, args.dtype, args.check = 3, 3, "float64", True

    import torch

    sys.path.insert(0, str(HERE))
    from atomshard.graph import AtomicGraph
    from atomshard.models.allegro import AllegroPotential, preset
    from atomshard.runtime.blocks import compute_properties_in_blocks, plan_blocks
    from bench_allegro import water_box

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report: dict = {
        "n_side": args.n_side, "block_atoms": args.block_atoms, "n_blocks_asked": args.n_blocks,
        "method": args.method,
        "dtype": args.dtype, "threads": args.threads, "stress": args.stress,
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
    }  # fmt: skip
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report[f"{name}_s"] = round(now - clock, 2)
        report[f"{name}_peak_rss_gib"] = round(_rss_gib(), 3)
        print(f"{name:>10}: {now - clock:9.1f} s   peak RSS {_rss_gib():6.2f} GiB", flush=True)
        clock = now

    atoms = water_box(args.n_side)
    report["n_atoms"] = len(atoms)
    print(f"{len(atoms):,} atoms, box {atoms.cell[0, 0]:.1f} Å", flush=True)
    model = AllegroPotential(preset("allegro-small", species=(1, 8), dtype=args.dtype)).eval()
    phase("box")
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    del atoms
    report["n_edges"] = graph.n_edges
    print(f"{graph.n_edges:,} edges ({graph.n_edges / graph.n_atoms:.1f} per atom)", flush=True)
    phase("graph")
    part = plan_blocks(graph, model.capabilities().n_hops, max_atoms=args.block_atoms,
                       n_blocks=args.n_blocks, method=args.method)  # fmt: skip
    report["n_blocks"] = int(part.max()) + 1
    print(f"{report['n_blocks']} blocks", flush=True)
    phase("plan")
    start = time.perf_counter()
    out = compute_properties_in_blocks(
        model, graph, forces=True, stress=args.stress, part=part, progress=True
    )
    evaluate_s = time.perf_counter() - start
    phase("evaluate")
    forces = out.forces
    assert forces is not None
    finite = bool(torch.isfinite(out.energies).all()) and bool(torch.isfinite(forces).all())
    report.update(
        energy_eV=float(out.energy),
        energy_per_atom_eV=float(out.energy) / graph.n_atoms,
        max_force_eV_A=float(forces.norm(dim=1).max()),
        net_force_eV_A=float(forces.sum(0).norm()),
        finite=finite,
        atom_steps_per_s=round(graph.n_atoms / evaluate_s, 1),
        atom_steps_per_cpu_s=round(graph.n_atoms / evaluate_s / args.threads, 1),
        peak_rss_gib=round(_rss_gib(), 3),
    )
    if out.stress is not None:
        report["stress_eV_A3"] = out.stress.tolist()
    if args.check:
        from atomshard.models.base import compute_properties

        whole = compute_properties(model, graph, forces=True, stress=args.stress)
        assert whole.forces is not None
        report["check_energy_rel"] = float(abs(whole.energy - out.energy) / abs(whole.energy))
        report["check_force_max_abs"] = float((whole.forces - forces).abs().max())
        phase("check")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "allegro_large.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    print(json.dumps({k: v for k, v in report.items() if k != "stress_eV_A3"}, indent=2))
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
