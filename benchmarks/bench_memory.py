"""Memory vs system size of one force evaluation, and how many atoms fit on one process.

For each α-quartz n×n×n cell (rattled 0.01 Å) and each setting of the model's layer
checkpoints (``--checkpoint off on``), a fresh worker process builds the random
``--model`` preset (float32 body), the neighbour list, and runs one energy+forces+stress
evaluation (no warm-up: a large system is evaluated once per MD step, and the first step
is the one that sets the peak). It reports:

- peak RSS (``ru_maxrss``) and the RSS before the evaluation (structure, graph, model);
- the peak *live* heap (glibc ``mallinfo2``: bytes in use, sampled every 5 ms) — what the
  evaluation really holds, as opposed to what the allocator keeps resident (None when
  another allocator is preloaded, e.g. ``LD_PRELOAD=libtcmalloc_minimal.so.4``, as
  ``atomshard --allocator tcmalloc`` does);
- wall time and atom·steps/s.

A least-squares line through the largest sizes (all but the smallest: the fixed chunk
temporaries make small sizes look cheaper per atom) gives the bytes per atom and, from it, the
largest system that fits in ``--budget-gib`` (default 24) and the peak RSS a 1 M-atom
system would need. Writes ``<out>/bench_memory.json`` and ``<out>/bench_memory.png``.

    python benchmarks/bench_memory.py --out bench_out/memory --repeat 8 13 18
    python benchmarks/bench_memory.py --smoke --out /tmp/bmem

``--checkpoint blocks`` evaluates block by block instead (:mod:`atomshard.runtime.blocks`,
blocks of at most ``--block-atoms`` atoms with their halo), the way a system larger than
memory runs; the fit then gives the per-atom cost of what stays whole (graph, forces) on top
of one block's peak:

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
        python benchmarks/bench_memory.py --out bench_out/memory-1m --repeat 49 \
        --checkpoint blocks --block-atoms 250000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = ("off", "on", "blocks")


def _worker(
    model_name: str, repeat: int, setting: str, threads: int, block_atoms: str, n_blocks: int
) -> dict:
    from atomshard.utils.process import configure_process

    configure_process(threads)

    import resource
    import threading

    import torch

    from atomshard.graph import AtomicGraph
    from atomshard.io.structures import builtin_structure
    from atomshard.models import compute_properties
    from atomshard.models.potential import NequIPPotential, preset
    from atomshard.models.potential.model import AUTO_CHECKPOINT_BYTES
    from atomshard.runtime.blocks import (
        block_graph,
        compute_properties_in_blocks,
        plan_blocks,
        resolve_max_atoms,
    )
    from atomshard.utils import process

    torch.manual_seed(0)
    config = preset(model_name, species=(8, 14), avg_num_neighbors=30.0, dtype="float32")
    checkpoint = {"off": False, "on": True, "blocks": "auto"}[setting]
    model = NequIPPotential.from_config(config).set_convolution(checkpoint=checkpoint)
    atoms = builtin_structure("quartz", (repeat, repeat, repeat))
    atoms.rattle(0.01, seed=0)
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    peak_live = [0]
    done = threading.Event()

    def live() -> int:
        return process.live_heap_bytes() or 0

    def sample() -> None:
        while not done.is_set():
            peak_live[0] = max(peak_live[0], live())
            done.wait(0.005)

    live_before = live()
    # None without glibc, or when another allocator is preloaded (glibc's heap then unused)
    glibc_heap = live_before >= 1 << 20
    rss_before = process.resident_bytes()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    blocks: dict = {}
    largest = len(atoms)  # the most atoms one evaluation holds
    if setting == "blocks":
        limit = None if n_blocks else resolve_max_atoms(model, block_atoms, graph)
        part = plan_blocks(graph, model.n_hops, max_atoms=limit, n_blocks=n_blocks or None)
        graphs = [block_graph(graph, part == b, model.n_hops) for b in part.unique()]
        largest = max(b.n_atoms for b in graphs)
        blocks = {
            "block_atoms": limit,
            "block_atoms_setting": block_atoms,
            "blocks": len(graphs),
            "largest_block_graph": largest,
            # edges the layers run on, over the whole graph's edges times layers
            "edge_work_ratio": sum(sum(b.shells.edges) for b in graphs)
            / (model.n_hops * graph.n_edges),
            "plan_s": time.perf_counter() - start,
        }
        del graphs
        out = compute_properties_in_blocks(model, graph, part=part, progress=False)
    else:
        out = compute_properties(model, graph, forces=True, stress=True)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    assert out.forces is not None
    return {
        "n_atoms": len(atoms),
        "n_edges": int(graph.src.numel()),
        "checkpoint": setting,
        # for blocks: whether the largest block graph ran checkpointed
        "checkpointed_by_auto": model.activation_bytes(largest) > AUTO_CHECKPOINT_BYTES,
        "wall_s": wall,
        "atom_steps_per_s": len(atoms) / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_before_mb": rss_before / 2**20,
        "peak_live_heap_mb": peak_live[0] / 2**20 if glibc_heap else None,
        "live_heap_before_mb": live_before / 2**20 if glibc_heap else None,
        "energy_ev": float(out.energy),
        "max_force_ev_a": float(out.forces.abs().max()),
        "threads": torch.get_num_threads(),
        "allocator": os.path.basename(os.environ.get("LD_PRELOAD", "").split(":")[0]) or "glibc",
        **blocks,
    }


def _run_worker(args, repeat: int, setting: str) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", setting, "--model", args.model,
        "--repeats", str(repeat), "--threads", str(args.threads),
        "--block-atoms", str(args.block_atoms), "--n-blocks", str(args.n_blocks or 0),
    ]  # fmt: skip
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=args.timeout, env=dict(os.environ)
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {repeat}/{setting} failed ({done.returncode}):\n"
                           f"{done.stderr[-2000:]}")  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit(rows: list[dict], key: str, budget_gib: float) -> dict | None:
    """Slope (MB per atom) and intercept of ``key`` against atoms through the largest sizes
    (all but the smallest where there are three or more), the atoms that fit in the budget
    and the figure at 1 M atoms; None with fewer than two sizes."""
    pts = sorted((r["n_atoms"], r[key]) for r in rows if r.get(key) is not None)
    if len(pts) >= 3:
        pts = pts[1:]
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    intercept = my - slope * mx
    budget_mb = budget_gib * 1024.0
    fits = int((budget_mb - intercept) / slope) if slope > 0 else None
    return {
        "kb_per_atom": slope * 1024.0,
        "intercept_mb": intercept,
        "atoms_in_budget": fits,
        "at_1m_atoms_gib": (intercept + slope * 1e6) / 1024.0,
        "sizes": [x for x, _ in pts],
    }


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, setting in enumerate(report["settings"]):
        rows = sorted(
            (r for r in report["runs"] if r["checkpoint"] == setting), key=lambda r: r["n_atoms"]
        )
        xs = [r["n_atoms"] for r in rows]
        c = colours[k % len(colours)]
        ax.plot(xs, [r["peak_rss_mb"] / 1024 for r in rows], "-o", color=c,
                label=f"checkpoint {setting}: peak RSS")  # fmt: skip
        if all(r["peak_live_heap_mb"] is not None for r in rows):
            ax.plot(xs, [r["peak_live_heap_mb"] / 1024 for r in rows], ":s", color=c,
                    label=f"checkpoint {setting}: peak live heap")  # fmt: skip
        f = report.get("fits", {}).get(setting, {}).get("peak_rss_mb")
        if f and f["atoms_in_budget"]:  # the fitted line, out to where it meets the budget
            end = f["atoms_in_budget"]
            ax.plot([xs[0], end], [(f["intercept_mb"] + f["kb_per_atom"] / 1024 * x) / 1024
                                   for x in (xs[0], end)], "--", color=c, lw=0.8,
                    label=f"fit {f['kb_per_atom']:.0f} kB/atom: {end:,} atoms fit")  # fmt: skip
    ax.axhline(report["budget_gib"], color="grey", lw=0.8, ls="--")
    ax.text(0.99, report["budget_gib"], f"{report['budget_gib']:g} GiB", va="bottom", ha="right",
            transform=ax.get_yaxis_transform())  # fmt: skip
    ax.set_xlabel("atoms (α-quartz)")
    ax.set_ylabel("GiB")
    allocator = report["runs"][0].get("allocator", "glibc") if report["runs"] else "glibc"
    ax.set_title(f"{report['model']}: one energy+forces+stress evaluation ({allocator})")
    ax.set_xlim(left=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/memory"))
    parser.add_argument("--model", default="si-config", help="NequIP preset (random weights)")
    parser.add_argument("--repeat", type=int, nargs="+", default=[8, 13, 18])
    parser.add_argument("--checkpoint", nargs="+", choices=SETTINGS, default=["off", "on"],
                        help="layer checkpoints off/on, or 'blocks' (block by block, the "
                        "layers' checkpoints on their own 'auto')")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--block-atoms",
        default="250000",
        help="checkpoint 'blocks': the most atoms, halo included, of one block's graph, or "
        "'auto' (what the calculator and 'atomshard eval/md' choose from the free memory)",
    )
    parser.add_argument(
        "--n-blocks", type=int, default=None, help="checkpoint 'blocks': this many blocks instead"
    )
    parser.add_argument("--budget-gib", type=float, default=24.0)
    parser.add_argument("--timeout", type=float, default=7200.0, help="per worker, seconds")
    parser.add_argument("--smoke", action="store_true", help="preset S, 9 and 72 atoms")
    parser.add_argument("--worker", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = _worker(
            args.model, args.repeats, args.worker, args.threads, args.block_atoms, args.n_blocks
        )
        print(json.dumps(result))
        return result
    if args.smoke:
        args.model, args.repeat = "S", [1, 2]
        if "blocks" in args.checkpoint:
            args.n_blocks = args.n_blocks or 3
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "benchmark": "memory vs atoms, one energy+forces+stress evaluation",
        "structure": "alpha-quartz n×n×n, rattled 0.01 Å",
        "model": args.model,
        "settings": args.checkpoint,
        "threads": args.threads,
        "budget_gib": args.budget_gib,
        "cpu": platform.processor() or platform.machine(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "runs": [],
        "fits": {},
    }
    print(f"{'checkpoint':>10s} {'atoms':>8s} {'edges':>9s} {'wall s':>8s} {'atom·steps/s':>13s} "
          f"{'peak RSS MB':>12s} {'live heap MB':>13s}")  # fmt: skip
    for repeat in args.repeat:
        for setting in args.checkpoint:  # interleaved: the same time window per size
            r = _run_worker(args, repeat, setting)
            report["runs"].append(r)
            live = r["peak_live_heap_mb"]
            print(f"{setting:>10s} {r['n_atoms']:8d} {r['n_edges']:9d} {r['wall_s']:8.2f} "
                  f"{r['atom_steps_per_s']:13.1f} {r['peak_rss_mb']:12.0f} "
                  f"{live if live is not None else float('nan'):13.0f}", flush=True)  # fmt: skip
    for setting in args.checkpoint:
        rows = [r for r in report["runs"] if r["checkpoint"] == setting]
        report["fits"][setting] = {
            key: fit(rows, key, args.budget_gib) for key in ("peak_rss_mb", "peak_live_heap_mb")
        }
        f = report["fits"][setting]["peak_rss_mb"]
        if f is not None and f["atoms_in_budget"] is None:
            print(f"checkpoint {setting}: peak RSS does not grow over {f['sizes']} atoms")
        elif f is not None:
            print(f"checkpoint {setting}: {f['kb_per_atom']:.1f} kB/atom peak RSS over "
                  f"{f['sizes']} atoms; {args.budget_gib:g} GiB holds ≈ {f['atoms_in_budget']} "
                  f"atoms; 1 M atoms ≈ {f['at_1m_atoms_gib']:.1f} GiB")  # fmt: skip
    tmp = args.out / "bench_memory.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.out / "bench_memory.json")
    _plot(report, args.out / "bench_memory.png")
    return report


if __name__ == "__main__":
    main()
