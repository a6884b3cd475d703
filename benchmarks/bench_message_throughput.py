"""Message throughput of one node-update layer vs messages per rank (the seed's Fig. 3).

One :class:`~atomshard.models.hamiltonian.layers.NodeUpdate` (l_max 4, hidden = 2E,
float32, inference) processes ``k`` messages: build ``[x_src, x_dst, e]`` (3E channels),
rotate into the edge frame, SO(2) linear -> gate -> SO(2) linear, rotate back, attention
softmax per destination, weighted sum. Wigner-D matrices are precomputed (as the seed
times the transformation, not the geometry); ``k / 32`` destination nodes (32 incoming
edges each). Each point is the median of ``--repeats`` timed calls after one warm-up;
for each E, ``k`` doubles until a call exceeds ``--max-seconds`` or the estimated memory
``--max-mib``. The "saturation" point reported per E is the smallest ``k`` reaching 90 %
of that E's best throughput.

Writes ``OUT/bench_message_throughput.json`` and ``.png``; ``--smoke`` runs tiny sizes.

    python benchmarks/bench_message_throughput.py --out results/
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

L_MAX = 4
SIZE = (L_MAX + 1) ** 2


def message_bytes(channels: int) -> int:
    """Input bytes of one message, ``3 x (l_max+1)^2 x E`` float32 (4.7 KiB for E = 16)."""
    return 3 * SIZE * channels * 4


def measure(channels: int, k: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    import torch

    from atomshard.models.hamiltonian.layers import NodeUpdate
    from atomshard.nn.wigner import edge_frame_rotation

    gen = torch.Generator().manual_seed(seed)
    n_nodes = max(k // 32, 1)
    torch.manual_seed(seed)
    layer = NodeUpdate(L_MAX, channels, 2 * channels)
    x = torch.randn(n_nodes, SIZE, channels, generator=gen)
    e = torch.randn(k, SIZE, channels, generator=gen)
    src = torch.randint(0, n_nodes, (k,), generator=gen)
    dst = torch.arange(k) % n_nodes
    vec = torch.randn(k, 3, dtype=torch.float64, generator=gen)
    rot = edge_frame_rotation(vec, L_MAX).float()
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            layer(x, e, rot, src, dst)
            if i:  # the first call is a warm-up
                times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "channels": channels,
        "messages": k,
        "seconds_median": med,
        "seconds_min": min(times),
        "seconds_max": max(times),
        "messages_per_s": k / med,
        "message_kib": message_bytes(channels) / 1024,
    }


def _plot(path: Path, rows: list[dict[str, Any]], saturation: dict[int, int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, ch in enumerate(sorted({r["channels"] for r in rows})):
        pts = sorted((r["messages"], r["messages_per_s"]) for r in rows if r["channels"] == ch)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=f"C{i}", label=f"E = {ch}")
        if ch in saturation:
            ax.axvline(saturation[ch], color=f"C{i}", ls="--", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("messages per rank (k)")
    ax.set_ylabel("messages / s (one node update, 1 CPU thread)")
    ax.set_title("message throughput (dashed: 90 % of best)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", default="16,32,64,128")
    ap.add_argument("--min-k", type=int, default=64)
    ap.add_argument("--max-k", type=int, default=2**17)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=4.0, help="stop doubling k beyond")
    ap.add_argument("--max-mib", type=float, default=3000.0, help="estimated memory cap")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--smoke", action="store_true", help="E 4 and 8, k 16-64")
    args = ap.parse_args(argv)
    if args.smoke:
        args.channels, args.min_k, args.max_k, args.repeats = "4,8", 16, 64, 2
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    print(f"{'E':>4} {'k':>7} {'KiB/msg':>8} {'median s':>9} {'messages/s':>11}", flush=True)
    try:
        for ch in (int(c) for c in args.channels.split(",")):
            k = args.min_k
            while k <= args.max_k:
                # message, rotated copy, hidden features and outputs: ~12 such tensors
                if 12 * message_bytes(ch) * k / 2**20 > args.max_mib:
                    break
                r = measure(ch, k, args.repeats)
                rows.append(r)
                print(
                    f"{ch:>4} {k:>7} {r['message_kib']:>8.1f} {r['seconds_median']:>9.4f} "
                    f"{r['messages_per_s']:>11.0f}",
                    flush=True,
                )
                if r["seconds_max"] > args.max_seconds:
                    break
                k *= 2
    finally:
        torch.set_num_threads(previous)
    saturation = {}
    for ch in sorted({r["channels"] for r in rows}):
        mine = sorted((r["messages"], r["messages_per_s"]) for r in rows if r["channels"] == ch)
        best = max(p[1] for p in mine)
        saturation[ch] = min(p[0] for p in mine if p[1] >= 0.9 * best)
        print(f"E = {ch}: best {best:.0f} messages/s, 90 % of it from k = {saturation[ch]}")
    report = {
        "benchmark": "message_throughput",
        "smoke": args.smoke,
        "l_max": L_MAX,
        "threads": args.threads,
        "load": os.getloadavg(),
        "rows": rows,
        "saturation_k": {str(k): v for k, v in saturation.items()},
    }
    from atomshard.utils.files import atomic_write

    out = Path(args.out)
    with atomic_write(out / "bench_message_throughput.json") as handle:
        json.dump(report, handle, indent=1)
    _plot(out / "bench_message_throughput.png", rows, saturation)
    return report


if __name__ == "__main__":
    main()
