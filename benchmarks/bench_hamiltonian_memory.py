"""Peak memory and time of the SO(2) Hamiltonian model vs number of edges (one process).

Structure: the built-in amorphous HfO2 cell (``atomshard.io.amorphous``, 3,000 atoms by
default), SZV-like basis (Hf ``2s1p1d`` = 10 orbitals, O ``1s1p`` = 4), l_max 4, E 16,
hidden 32, 3 layers, float32 body. The number of edges is varied with the cutoff
(3,000 atoms: 4 Å -> 63 k edges ... 12 Å -> 1.8 M edges, the Hamiltonian seed's setting).

Modes (each point runs in a fresh child process; peak = the child's ``VmHWM``):

* ``forward_plain``  -- inference, all edges at once (the model's default)
* ``forward``        -- inference, edges in chunks of ``--edge-chunk``
* ``train``          -- forward + backward of a quadratic loss on all blocks, chunked
* ``train_ckpt``     -- the same with activation checkpointing per chunk

``bytes/edge`` = (peak - RSS before the forward) / edges. RSS includes what glibc's heap
keeps after frees: checkpointed training frees many chunk-sized blocks between long-lived
ones, and the heap then holds several times the live memory; ``--mmap-threshold 65536``
(``MALLOC_MMAP_THRESHOLD_`` in the children) measures without that. A point whose predicted peak
(from the mode's largest measured point) exceeds ``--max-gib`` is skipped and listed.
Writes ``OUT/bench_hamiltonian_memory.json`` and ``.png``. ``--smoke``: 30 atoms, one
tiny cutoff, seconds.

    nice python benchmarks/bench_hamiltonian_memory.py --out results/
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
from typing import Any

MODES = ("forward_plain", "forward", "train", "train_ckpt")
SZV = {"Hf": "2s1p1d", "O": "1s1p"}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(atoms: int, cutoff: float, mode: str, edge_chunk: int, threads: int) -> dict[str, Any]:
    """One measurement in this process (meant to run in a fresh child)."""
    import torch

    from atomshard.graph import AtomicGraph
    from atomshard.io.amorphous import amorphous_hfo2
    from atomshard.models.hamiltonian import HamiltonianConfig, HamiltonianModel

    torch.set_num_threads(threads)
    structure = amorphous_hfo2(max(atoms // 3, 1), seed=0)
    graph = AtomicGraph.from_ase(structure, cutoff)
    torch.manual_seed(0)
    cfg = HamiltonianConfig(basis=SZV, cutoff=cutoff, l_max=4, channels=16, hidden=32, n_layers=3)
    model = HamiltonianModel(cfg)
    model.set_memory(
        edge_chunk=0 if mode == "forward_plain" else edge_chunk, checkpoint=mode == "train_ckpt"
    )
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    if mode.startswith("forward"):
        with torch.no_grad():
            pred = model(graph)
    else:
        pred = model(graph)
        blocks = [b for _, b in pred.node.values()] + [b for _, b in pred.edge.values()]
        loss = sum((b * b).mean() for b in blocks)
        assert isinstance(loss, torch.Tensor)
        loss.backward()
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    size = (cfg.l_max + 1) ** 2 * cfg.channels * 4  # one float32 edge embedding, bytes
    return {
        "atoms": graph.n_atoms,
        "cutoff": cutoff,
        "edges": graph.n_edges,
        "mode": mode,
        "edge_chunk": edge_chunk,
        "seconds": seconds,
        "rss_before_gib": before / 2**20,
        "peak_gib": peak / 2**20,
        "bytes_per_edge": (peak - before) * 1024 / max(graph.n_edges, 1),
        "edge_embedding_gib": graph.n_edges * size / 2**30,
    }


def _child(
    atoms: int, cutoff: float, mode: str, chunk: int, threads: int, mmap_threshold: int
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", f"{atoms},{cutoff},{mode},{chunk},{threads}"]
    env = dict(os.environ)
    if mmap_threshold > 0:
        # glibc: allocations above this go to mmap and return to the OS when freed
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        return {"mode": mode, "cutoff": cutoff, "error": done.stderr.strip()[-400:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in MODES:
        pts = sorted((r["edges"], r["peak_gib"], r["seconds"]) for r in rows if r["mode"] == mode)
        if not pts:
            continue
        e = [p[0] for p in pts]
        ax1.plot(e, [p[1] for p in pts], "o-", label=mode)
        ax2.plot(e, [p[2] for p in pts], "o-", label=mode)
    emb = sorted({(r["edges"], r["edge_embedding_gib"]) for r in rows})
    if emb:
        ax1.plot([p[0] for p in emb], [p[1] for p in emb], "k:", label="one edge-embedding tensor")
    ax1.axhline(24, color="grey", lw=0.8)
    for ax, label in ((ax1, "peak RSS (GiB)"), (ax2, "seconds")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("edges")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax1.set_title("peak memory, 1 process (24 GiB line)")
    ax2.set_title("time of one pass (shared, loaded 2-core CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=3000)
    ap.add_argument("--cutoffs", default="4,6,8,12", help="Å, comma-separated (ascending)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument(
        "--mode-cutoff",
        action="append",
        default=[],
        metavar="MODE=Å",
        help="largest cutoff for one mode (e.g. train=6); repeatable",
    )
    ap.add_argument("--edge-chunk", type=int, default=4096)
    ap.add_argument("--max-gib", type=float, default=16.0, help="skip predicted larger peaks")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--mmap-threshold",
        type=int,
        default=0,
        help="bytes; set MALLOC_MMAP_THRESHOLD_ in the children (0: glibc's default)",
    )
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--smoke", action="store_true", help="30 atoms, cutoff 3.5 Å")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        atoms, cutoff, mode, chunk, threads = args.worker.split(",")
        print(json.dumps(measure(int(atoms), float(cutoff), mode, int(chunk), int(threads))))
        return {}
    if args.smoke:
        args.atoms, args.cutoffs, args.edge_chunk = 30, "3.5", 128
    cutoffs = sorted(float(c) for c in args.cutoffs.split(","))
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise SystemExit(f"unknown modes {unknown}; known: {MODES}")
    limit = {m: float(c) for m, c in (s.split("=") for s in args.mode_cutoff)}
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    print(
        f"{'mode':>14} {'cutoff':>6} {'edges':>9} {'seconds':>9} {'peak GiB':>9} "
        f"{'bytes/edge':>10} {'emb GiB':>8}",
        flush=True,
    )
    for mode in modes:
        for cutoff in cutoffs:
            if cutoff > limit.get(mode, float("inf")):
                continue
            done = [r for r in rows if r["mode"] == mode]
            if done:
                last = max(done, key=lambda r: r["edges"])
                # edges grow ~ cutoff^3 at fixed density
                edges = last["edges"] * (cutoff / last["cutoff"]) ** 3
                predicted = last["rss_before_gib"] + last["bytes_per_edge"] * edges / 2**30
                if predicted > args.max_gib:
                    skipped.append({"mode": mode, "cutoff": cutoff, "predicted_gib": predicted})
                    print(f"{mode:>14} {cutoff:>6} skipped: predicted {predicted:.1f} GiB")
                    continue
            r = _child(args.atoms, cutoff, mode, args.edge_chunk, args.threads, args.mmap_threshold)
            if "error" in r:
                skipped.append(r)
                print(f"{mode:>14} {cutoff:>6} failed: {r['error'][-200:]}", flush=True)
                continue
            rows.append(r)
            print(
                f"{mode:>14} {cutoff:>6} {r['edges']:>9} {r['seconds']:>9.2f} "
                f"{r['peak_gib']:>9.2f} {r['bytes_per_edge']:>10.0f} "
                f"{r['edge_embedding_gib']:>8.2f}",
                flush=True,
            )
    report = {
        "benchmark": "hamiltonian_memory",
        "smoke": args.smoke,
        "model": {"basis": SZV, "l_max": 4, "channels": 16, "hidden": 32, "n_layers": 3},
        "atoms": args.atoms,
        "edge_chunk": args.edge_chunk,
        "threads": args.threads,
        "mmap_threshold": args.mmap_threshold,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "rows": rows,
        "skipped": skipped,
    }
    from atomshard.utils.files import atomic_write

    out = Path(args.out)
    with atomic_write(out / "bench_hamiltonian_memory.json") as handle:
        json.dump(report, handle, indent=1)
    _plot(out / "bench_hamiltonian_memory.png", rows)
    return report


if __name__ == "__main__":
    main()
