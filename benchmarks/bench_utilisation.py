"""Utilisation curve: atom·steps/s vs atoms for several channel counts, atomshard and sevenn.

The SevenNet SI's Fig. S1 measure: for each channel count (default 4, 8, 16, 32, 64) a
random model with the SI benchmark architecture (l_max 3, 4 layers, cutoff 4 Å, parity) is
built *in sevenn* (its ``build_E3_equivariant_model``), saved as a sevenn checkpoint and
converted to ours, so both codes run the same weights. Each (code, channels, size) runs in
a fresh worker process (warm-up, then ``--steps`` energy+forces+stress steps on rattled
α-quartz n×n×n cells); the workers of one size are interleaved (channels × codes in turn),
so the same-size ratio ours/sevenn is taken in the same time window. sevenn runs at its
best process settings (same as ours: passive OpenMP waits, no mmap churn, plus
``MALLOC_MMAP_MAX_=0``); sizes above ``--sevenn-max-atoms`` run ours only.

Writes ``<out>/bench_utilisation.json`` and ``<out>/bench_utilisation.png``.

    python benchmarks/bench_utilisation.py --out bench_out/utilisation
    python benchmarks/bench_utilisation.py --smoke --out /tmp/butil
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

CODES = ("atomshard", "sevenn")


def _sevenn_checkpoint(channels: int, l_max: int, n_layers: int, cutoff: float, path: Path):
    """A random sevenn model with the SI architecture, saved as a sevenn checkpoint."""
    import copy
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sevenn
        import sevenn._const as const
        import sevenn._keys as keys
        from sevenn.model_build import build_E3_equivariant_model

        cfg = copy.deepcopy(const.DEFAULT_E3_EQUIVARIANT_MODEL_CONFIG)
        cfg.update(
            {
                keys.CHEMICAL_SPECIES: ["O", "Si"],
                keys.NUM_SPECIES: 2,
                keys.TYPE_MAP: {8: 0, 14: 1},
                keys.CUTOFF: cutoff,
                keys.NODE_FEATURE_MULTIPLICITY: channels,
                keys.LMAX: l_max,
                keys.NUM_CONVOLUTION: n_layers,
                keys.CONV_DENOMINATOR: 30.0,
                keys.SHIFT: [-3.0, -5.0],
                keys.SCALE: [1.3, 1.1],
                "version": sevenn.__version__,
            }
        )
        torch.manual_seed(channels)
        model = build_E3_equivariant_model(cfg)
    torch.save({"config": cfg, "model_state_dict": model.state_dict()}, path)
    return path


def _worker(code: str, checkpoint: str, repeat: int, steps: int, warmup: int, threads: int):
    from atomshard.utils.process import configure_process

    configure_process(threads)

    import torch

    from atomshard.io.structures import builtin_structure

    atoms = builtin_structure("quartz", (repeat, repeat, repeat))
    atoms.rattle(0.01, seed=0)
    if code == "atomshard":
        from atomshard.graph import AtomicGraph
        from atomshard.models import compute_properties
        from atomshard.models.checkpoint import load_model

        model = load_model(checkpoint)

        def step() -> float:
            graph = AtomicGraph.from_ase(atoms, model.cutoff)
            return float(compute_properties(model, graph, forces=True, stress=True).energy)
    else:
        import warnings

        warnings.simplefilter("ignore")
        from sevenn.calculator import SevenNetCalculator

        calc = SevenNetCalculator(checkpoint, device="cpu")

        def step() -> float:
            calc.calculate(atoms, ["energy", "forces", "stress"])
            return float(calc.results["energy"])

    from _timing import time_steps  # this folder is sys.path[0] in a worker

    return {
        "code": code,
        "threads": torch.get_num_threads(),
        **time_steps(step, len(atoms), steps, warmup),
    }


def _run_worker(args, code: str, checkpoint: Path, repeat: int) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", code, "--checkpoint", str(checkpoint),
        "--repeats", str(repeat), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--threads", str(args.threads),
    ]  # fmt: skip
    env = dict(os.environ, MALLOC_MMAP_MAX_="0")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{code} worker failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, channels in enumerate(report["channels"]):
        for code, style in zip(CODES, ("-o", "--s")):
            rows = sorted(
                (r for r in report["runs"] if r["channels"] == channels and r["code"] == code),
                key=lambda r: r["n_atoms"],
            )
            if rows:
                ax.plot(
                    [r["n_atoms"] for r in rows],
                    [r["atom_steps_per_s"] for r in rows],
                    style,
                    color=colours[k % len(colours)],
                    label=f"{code}, {channels} ch",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms (α-quartz)")
    ax.set_ylabel("atom·steps/s (energy+forces+stress)")
    ax.set_title(
        f"utilisation, l_max {report['l_max']}, {report['n_layers']} layers, "
        f"{report['cutoff']} Å, {report['threads']} threads"
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/utilisation"))
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--repeat", type=int, nargs="+", default=[2, 4, 6, 8])
    parser.add_argument("--sevenn-max-atoms", type=int, default=1944)
    parser.add_argument("--l-max", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--cutoff", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600.0, help="per worker, seconds")
    parser.add_argument("--smoke", action="store_true", help="4 channels, 9 atoms, 1 step")
    parser.add_argument("--worker", choices=CODES, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = _worker(
            args.worker, args.checkpoint, args.repeats, args.steps, args.warmup, args.threads
        )
        print(json.dumps(result))
        return result
    if args.smoke:
        args.channels, args.repeat, args.steps, args.warmup = [4], [1], 1, 0
        args.l_max, args.layers = 1, 2
    import torch

    from atomshard.models.potential.sevennet import convert_sevennet_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    models = args.out / "models"
    models.mkdir(exist_ok=True)
    checkpoints: dict[int, dict[str, Path]] = {}
    for channels in args.channels:
        source = _sevenn_checkpoint(
            channels, args.l_max, args.layers, args.cutoff, models / f"sevenn_{channels}ch.pth"
        )
        ours = convert_sevennet_checkpoint(source, models / f"atomshard_{channels}ch.pt")
        checkpoints[channels] = {"sevenn": source, "atomshard": Path(ours)}
    report: dict = {
        "benchmark": "utilisation curve (SevenNet SI Fig. S1 measure)",
        "structure": "alpha-quartz n×n×n, rattled 0.01 Å",
        "channels": args.channels,
        "l_max": args.l_max,
        "n_layers": args.layers,
        "cutoff": args.cutoff,
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "cpu": platform.processor() or platform.machine(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "runs": [],
    }
    try:
        import sevenn

        report["versions"]["sevenn"] = sevenn.__version__
    except ImportError:
        pass
    print(f"{'code':10s} {'ch':>3s} {'atoms':>7s} {'median s':>9s} {'atom·steps/s':>13s} "
          f"{'peak RSS MB':>12s} {'sevenn/ours time':>17s}")  # fmt: skip
    for repeat in args.repeat:
        n_atoms = 9 * repeat**3
        for channels in args.channels:
            codes = [c for c in CODES if c == "atomshard" or n_atoms <= args.sevenn_max_atoms]
            rows = {c: _run_worker(args, c, checkpoints[channels][c], repeat) for c in codes}
            for code, r in rows.items():
                r["channels"] = channels
                if "sevenn" in rows:
                    r["sevenn_over_atomshard_time"] = (
                        rows["sevenn"]["median_s"] / rows["atomshard"]["median_s"]
                    )
                report["runs"].append(r)
                print(
                    f"{code:10s} {channels:3d} {r['n_atoms']:7d} {r['median_s']:9.3f} "
                    f"{r['atom_steps_per_s']:13.1f} {r['peak_rss_mb']:12.0f} "
                    f"{r.get('sevenn_over_atomshard_time', float('nan')):17.2f}",
                    flush=True,
                )
    (args.out / "bench_utilisation.json").write_text(json.dumps(report, indent=2))
    _plot(report, args.out / "bench_utilisation.png")
    print(f"wrote {args.out / 'bench_utilisation.json'} and {args.out / 'bench_utilisation.png'}")
    return report


if __name__ == "__main__":
    main()
