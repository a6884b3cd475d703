"""Throughput, peak memory and time split of the n2p2 H2O potential (BPNNPotential).

For each system size (the 1,080-atom H2O_RPBE-D3 box tiled n x n x n), dtype and path, a
fresh subprocess builds its input, warms up (below 100k atoms), times energy+forces
evaluations and reports its own peak RSS. Paths: ``graph`` (AtomicGraph edge list +
compute_properties, what MD and the runtime use) and ``positions``
(``BPNNPotential.evaluate_positions``: neighbours from a cell list inside the fused
kernel, no edge list; the path for millions of atoms). One more run splits the time into
symmetry functions, network and the backward pass (forces), as in the CabanaMD paper's
Fig. 5. The memory above start-up per atom at the largest size is extrapolated to the
number of atoms that fit in 24 GiB.

Usage:
    python benchmarks/bench_bpnn.py --out bench_out/bpnn            # full (minutes)
    python benchmarks/bench_bpnn.py --tiles 1 2 4 10 --paths positions --repeats 1
    python benchmarks/bench_bpnn.py --smoke --out /tmp/bpnn_smoke   # seconds

Writes ``bpnn.json`` and ``bpnn.png`` into ``--out``. Timings are wall-clock; the
machine may be shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "n2p2" / "H2O_RPBE-D3"


#: Largest size run on the graph path (its edge list costs ~10 KiB per atom).
GRAPH_MAX_ATOMS = 250_000


def _tiled(tile: int, subset: int = 0):
    """Positions, atomic numbers and cell of the box tiled ``tile``^3 (numpy, no ase.Atoms
    copy of the big system)."""
    import numpy as np

    from atomshard.io.n2p2_data import read_n2p2_data

    box = read_n2p2_data(DATA / "input.data")[0]
    if subset:
        box = box[:subset]  # whole molecules (O H H order), same cell
    shifts = np.stack(np.meshgrid(*[np.arange(tile)] * 3, indexing="ij"), -1).reshape(-1, 3)
    offsets = shifts @ box.cell.array
    pos = (offsets[:, None, :] + box.positions[None, :, :]).reshape(-1, 3)
    numbers = np.tile(box.numbers, len(shifts))
    return pos, numbers, box.cell.array * tile


def _setup(
    tile: int, dtype_name: str, threads: int, backward: str, subset: int = 0, path: str = "graph"
):
    import torch

    from atomshard.graph import AtomicGraph
    from atomshard.models.bpnn import load_n2p2_potential

    torch.set_num_threads(threads)
    dtype = {"float64": torch.float64, "float32": torch.float32}[dtype_name]
    model = load_n2p2_potential(DATA, dtype=dtype, backward=backward)
    pos, numbers, cell = _tiled(tile, subset)
    if path == "positions":
        return model, (pos, numbers, cell), 0.0
    import ase

    atoms = ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
    t0 = time.perf_counter()
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    return model, graph, time.perf_counter() - t0


def _current_rss_mib() -> float:
    import torch  # noqa: F401  (count torch in the baseline)

    from atomshard.models.bpnn import load_n2p2_potential

    load_n2p2_potential(DATA)
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def run_one(
    tile: int,
    dtype_name: str,
    threads: int,
    repeats: int,
    backward: str,
    subset: int = 0,
    path: str = "graph",
) -> dict:
    """Time energy+forces of one size in this process (call in a fresh process).

    Wall time and process CPU time are both kept: on a shared machine the CPU time per
    evaluation (divided by the threads used) is the steadier measure of the work.
    """
    from atomshard.models import compute_properties

    base = _current_rss_mib()  # interpreter + torch + model, before any structure
    model, system, t_graph = _setup(tile, dtype_name, threads, backward, subset, path)
    if path == "positions":
        n_atoms, n_edges = len(system[1]), 0

        def evaluate() -> None:
            model.evaluate_positions(*system, stress=False)
    else:
        n_atoms, n_edges = system.n_atoms, system.n_edges

        def evaluate() -> None:
            compute_properties(model, system, stress=False)

    if n_atoms < 100_000:
        evaluate()  # warm-up (big systems: the first evaluation is representative)
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        evaluate()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = statistics.median(times)
    cpu_med = statistics.median(cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    return {
        "tile": tile, "n_atoms": n_atoms, "n_edges": n_edges, "dtype": dtype_name,
        "path": path, "kernel": model.kernel,
        "threads": threads, "backward": backward, "times_s": times, "median_s": med,
        "spread_s": max(times) - min(times), "atom_evals_per_s": n_atoms / med,
        "cpu_s": cpu, "cpu_median_s": cpu_med,
        "atom_evals_per_cpu_s": n_atoms / cpu_med,
        "neighbour_list_s": t_graph, "peak_rss_mib": peak,
        "rss_per_atom_kib": peak * 1024 / n_atoms, "base_rss_mib": base,
        "rss_above_base_per_atom_kib": (peak - base) * 1024 / n_atoms,
    }  # fmt: skip


def time_split(tile: int, dtype_name: str, threads: int, backward: str, subset: int = 0) -> dict:
    """CPU seconds in symmetry functions, network (forward+backward) and SF backward."""
    import torch

    model, graph, _ = _setup(tile, dtype_name, threads, backward, subset)
    elem = model.element_of_z[graph.species]
    best: dict[str, float] = {}
    for _ in range(2):
        vec = graph.edge_vectors().requires_grad_(True)
        t0 = time.process_time()
        feats = model.features(graph, vec)
        t1 = time.process_time()
        energy = model.network_energies(feats, elem).sum()
        (g_feats,) = torch.autograd.grad(energy, feats)
        t2 = time.process_time()
        torch.autograd.grad(feats, vec, g_feats)
        t3 = time.process_time()
        for key, value in (("symmetry_functions", t1 - t0), ("network", t2 - t1),
                           ("forces_backward", t3 - t2)):  # fmt: skip
            best[key] = min(best.get(key, float("inf")), value)
    return {"tile": tile, "n_atoms": graph.n_atoms, "dtype": dtype_name, **best}


def compare_kernels(tile: int, repeats: int, subset: int = 0) -> dict:
    """CPU-s per evaluation (float64, 1 thread) of the fused kernel and the torch path's
    backward modes, interleaved in one process so that load affects all alike."""
    import ase
    import torch

    from atomshard.graph import AtomicGraph
    from atomshard.models import compute_properties
    from atomshard.models.bpnn import load_n2p2_potential

    torch.set_num_threads(1)
    settings = {
        "native": {"kernel": "native"},
        "torch store": {"kernel": "torch", "backward": "store"},
        "torch recompute": {"kernel": "torch", "backward": "recompute"},
        "torch explicit": {"kernel": "torch", "backward": "explicit"},
    }
    models = {k: load_n2p2_potential(DATA, **kw) for k, kw in settings.items()}
    pos, numbers, cell = _tiled(tile, subset)
    atoms = ase.Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
    c0 = time.process_time()
    graph = AtomicGraph.from_ase(atoms, models["native"].cutoff)
    t_graph = time.process_time() - c0
    cpu: dict[str, list[float]] = {k: [] for k in models}
    for model in models.values():
        compute_properties(model, graph, stress=False)  # warm-up
    for _ in range(repeats):
        for name, model in models.items():
            c0 = time.process_time()
            compute_properties(model, graph, stress=False)
            cpu[name].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    return {"n_atoms": graph.n_atoms, "cpu_s": cpu, "cpu_median_s": med,
            "atom_evals_per_cpu_s": {k: graph.n_atoms / v for k, v in med.items()},
            "neighbour_list_cpu_s": t_graph}  # fmt: skip


def _child(args: argparse.Namespace, mode: str, tile: int, dtype: str, path: str = "graph") -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--tile", str(tile), "--dtype", dtype,
           "--threads", str(args.threads), "--repeats", str(args.repeats),
           "--backward", args.backward, "--subset", str(args.subset), "--path", path]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted({(r.get("path", "graph"), r["dtype"]) for r in results}):
        rows = [r for r in results if (r.get("path", "graph"), r["dtype"]) == key]
        rows.sort(key=lambda r: r["n_atoms"])
        n = [r["n_atoms"] for r in rows]
        label = f"{key[0]} {key[1]}"
        ax1.plot(n, [r["atom_evals_per_s"] for r in rows], "o-", label=f"{label} wall")
        ax1.plot(n, [r["atom_evals_per_cpu_s"] * r["threads"] for r in rows], "s--",
                 label=f"{label} CPU-time x threads")  # fmt: skip
        ax2.plot(n, [r["rss_per_atom_kib"] for r in rows], "o-", label=f"{label} total")
    ax1.axhline(4600, color="grey", ls="--", lw=1, label="n2p2, 2 threads")
    ax2.axhline(58, color="grey", ls="--", lw=1, label="n2p2")
    ax2.axhline(24 * 2**20 / 1e7, color="grey", ls=":", lw=1, label="10 M atoms in 24 GiB")
    for ax, label in ((ax1, "atom·evals / s (energy+forces)"), (ax2, "peak RSS / atom (KiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("atoms (H2O_RPBE-D3 tiled)")
        ax.set_ylabel(label)
        ax.legend(fontsize=6)
    ax2.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _print_run(r: dict) -> None:
    print(f"{r.get('path', 'graph')} {r['dtype']} {r['n_atoms']:>8} atoms: "
          f"{r['median_s']:.3f} s/eval "
          f"(spread {r['spread_s']:.3f}), {r['atom_evals_per_s']:.0f} atom·evals/s, "
          f"CPU {r['cpu_median_s']:.3f} s/eval = {r['atom_evals_per_cpu_s']:.0f} "
          f"atom·evals per CPU-s, peak RSS {r['peak_rss_mib']:.0f} MiB "
          f"({r['rss_per_atom_kib']:.1f} KiB/atom; "
          f"{r.get('rss_above_base_per_atom_kib', float('nan')):.1f} KiB/atom above the "
          f"{r.get('base_rss_mib', float('nan')):.0f} MiB start-up)", flush=True)  # fmt: skip


def _extrapolate(results: list[dict]) -> list[dict]:
    """Per (path, dtype): memory above start-up per atom at the largest size run, and the
    atoms that would fit in 24 GiB at that rate."""
    out = []
    for key in sorted({(r.get("path", "graph"), r["dtype"]) for r in results}):
        rows = [r for r in results if (r.get("path", "graph"), r["dtype"]) == key]
        big = max(rows, key=lambda r: r["n_atoms"])
        per_atom = (big["peak_rss_mib"] - big["base_rss_mib"]) * 2**20 / big["n_atoms"]
        atoms = (24 * 2**30 - big["base_rss_mib"] * 2**20) / max(per_atom, 1.0)
        out.append({"path": key[0], "dtype": key[1], "n_atoms": big["n_atoms"],
                    "base_rss_mib": big["base_rss_mib"], "kib_per_atom_above_base":
                    per_atom / 1024, "atoms_in_24_gib": atoms})  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench_out/bpnn"))
    p.add_argument("--tiles", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backward", default="recompute")
    p.add_argument("--paths", nargs="+", default=["graph", "positions"],
                   choices=["graph", "positions"])  # fmt: skip
    p.add_argument("--path", default="graph", help=argparse.SUPPRESS)
    p.add_argument("--subset", type=int, default=0, help="keep only the first N atoms")
    p.add_argument("--smoke", action="store_true", help="150 atoms, one repeat (seconds)")
    p.add_argument("--kernels", action="store_true",
                   help="compare kernel/backward modes interleaved at the first tile")  # fmt: skip
    p.add_argument("--child", choices=["run", "split", "both", "kernels"], help=argparse.SUPPRESS)
    p.add_argument("--tile", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float64", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "run":
        print(json.dumps(run_one(args.tile, args.dtype, args.threads, args.repeats,
                                 args.backward, args.subset, args.path)))  # fmt: skip
        return
    if args.child == "both":  # smoke: one process for both (saves a torch start-up)
        run = run_one(args.tile, args.dtype, args.threads, args.repeats, args.backward,
                      args.subset)  # fmt: skip
        split = time_split(args.tile, args.dtype, args.threads, args.backward, args.subset)
        positions = run_one(args.tile, args.dtype, args.threads, args.repeats, args.backward,
                            args.subset, "positions")  # fmt: skip
        print(json.dumps({"run": run, "positions": positions, "split": split}))
        return
    if args.child == "kernels":
        print(json.dumps(compare_kernels(args.tile, args.repeats, args.subset)))
        return
    if args.child == "split":
        print(json.dumps(time_split(args.tile, args.dtype, args.threads, args.backward,
                                    args.subset)))  # fmt: skip
        return
    if not DATA.is_dir():
        sys.exit(f"reference data {DATA} not present")
    if args.smoke:
        args.tiles, args.dtypes, args.repeats, args.subset = [1], ["float64"], 1, 150
        args.threads, args.kernels = 1, True
    results, splits = [], []
    if args.smoke:
        both = _child(args, "both", 1, "float64")
        results, splits = [both["run"], both["positions"]], [both["split"]]
    for dtype in [] if args.smoke else args.dtypes:
        for path in args.paths:
            for tile in args.tiles:
                if path == "graph" and 1080 * tile**3 > GRAPH_MAX_ATOMS:
                    continue
                results.append(_child(args, "run", tile, dtype, path))
                _print_run(results[-1])
    if args.smoke:
        for r in results:
            _print_run(r)
    fits = _extrapolate(results)
    for f in fits:
        print(f"{f['path']} {f['dtype']}: {f['kib_per_atom_above_base']:.2f} KiB/atom above the "
              f"{f['base_rss_mib']:.0f} MiB start-up at {f['n_atoms']} atoms -> "
              f"{f['atoms_in_24_gib'] / 1e6:.1f} M atoms in 24 GiB")  # fmt: skip
    if not args.smoke:
        splits = [_child(args, "split", 1, dtype) for dtype in args.dtypes]
    kernels = _child(args, "kernels", args.tiles[0], "float64") if args.kernels else None
    if kernels is not None:
        for name, value in kernels["cpu_median_s"].items():
            print(f"{name:16s} {kernels['n_atoms']} atoms: {value:.3f} CPU-s/eval = "
                  f"{kernels['atom_evals_per_cpu_s'][name]:.0f} atom·evals per CPU-s")  # fmt: skip
        print(f"neighbour list {kernels['neighbour_list_cpu_s']:.3f} CPU-s")
    for s in splits:
        print(f"split {s['dtype']} {s['n_atoms']} atoms: symmetry functions "
              f"{s['symmetry_functions']:.3f} CPU-s, network {s['network']:.3f} CPU-s, "
              f"forces (SF backward) {s['forces_backward']:.3f} CPU-s")  # fmt: skip
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"device": platform.processor() or platform.machine(), "python": sys.version.split()[0],
            "torch": torch.__version__, "threads": args.threads, "world_size": 1,
            "backward": args.backward, "potential": "H2O_RPBE-D3", "smoke": args.smoke}  # fmt: skip
    (args.out / "bpnn.json").write_text(json.dumps(
        {"meta": meta, "results": results, "time_split": splits, "memory_extrapolation": fits,
         "kernels": kernels},
        indent=1))  # fmt: skip
    _plot(results, args.out / "bpnn.png")
    print(f"wrote {args.out / 'bpnn.json'} and {args.out / 'bpnn.png'}")


if __name__ == "__main__":
    main()
