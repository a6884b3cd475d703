"""Data-parallel training on gloo: throughput and the SI's DDP numerics study, in small.

On the n2p2 RPBE-D3 water set (Bohr/Hartree converted), a small NequIP-class model
(float32 body) trains ``--steps`` AdamW steps with global batch ``--batch-size``:

- throughput (structures/s, median step time) at 1 rank (2 threads) and 2 ranks
  (1 thread each), for the ``allreduce`` (one all-reduce after backward) and ``ddp``
  (PyTorch DDP) strategies; every run in forked local ranks (passive OpenMP waits);
  the model's shifts, scales and neighbour normaliser come from the data's statistics;
- numerics: per-step training-loss differences against the 2-rank ``allreduce`` run
  with seed 0 for: ``ddp`` (same seed), a rerun, 1 rank, and a new seed (MAE, RMSE);
- precision: the 1-rank run with a float64 body and with a bf16 body (float32 master
  weights, ``compute_dtype="bfloat16"``): speed and loss difference against float32.

``--metrics CSV`` also summarises a finished ``atomshard train`` run (time to reach
force-RMSE thresholds). Writes ``<out>/bench_train.json`` and ``<out>/bench_train.png``.

    python benchmarks/bench_train.py --out bench_out/train
    python benchmarks/bench_train.py --smoke --out /tmp/bt
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import statistics
from pathlib import Path

WATER = Path(__file__).resolve().parents[1].parent / "shared/data/n2p2/H2O_RPBE-D3/train/input.data"


def _frames(smoke: bool):
    from atomshard.train.data import LabelledStructure, labelled_from_atoms, read_dataset

    if smoke or not WATER.exists():
        import ase
        import numpy as np
        from ase.calculators.lj import LennardJones
        from ase.calculators.singlepoint import SinglePointCalculator

        rng = np.random.default_rng(0)
        out: list[LabelledStructure] = []
        while len(out) < 4:
            atoms = ase.Atoms("H2O2", positions=rng.uniform(0, 3.5, (4, 3)), cell=[3.5] * 3,
                              pbc=True)  # fmt: skip
            if atoms.get_all_distances(mic=True)[np.triu_indices(4, 1)].min() < 0.9:
                continue
            atoms.calc = LennardJones(sigma=1.0, epsilon=0.05, rc=2.5, smooth=True)
            e, f = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
            out.append(labelled_from_atoms(atoms, f"synthetic {len(out)}"))
        return out, "synthetic LJ H2O2 (4 frames)"
    frames = read_dataset(WATER, length_unit="bohr", energy_unit="hartree")
    return frames, f"n2p2 RPBE-D3 water ({len(frames)} frames)"


def _diff(a: list[float], b: list[float]) -> dict[str, float]:
    d = [x - y for x, y in zip(a, b)]
    return {"mae": sum(abs(v) for v in d) / len(d), "rmse": (sum(v * v for v in d) / len(d)) ** 0.5,
            "max": max(abs(v) for v in d)}  # fmt: skip


def _time_to(metrics: Path) -> dict:
    with open(metrics) as fh:
        rows = list(csv.DictReader(fh))
    out: dict = {"epochs": len(rows), "final": rows[-1]}
    for thr in (0.3, 0.2, 0.15, 0.1, 0.07, 0.05):
        hit = next((r for r in rows if float(r["val_force_rmse"]) <= thr), None)
        out[f"force_rmse<={thr}"] = None if hit is None else {
            "epoch": int(hit["epoch"]), "time_s": float(hit["time_s"])}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/train"))
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--metrics", type=Path, default=None, help="a metrics.csv to summarise")
    parser.add_argument("--smoke", action="store_true", help="4 tiny frames, 2 steps")
    args = parser.parse_args(argv)

    from atomshard.utils.process import configure_process

    configure_process()  # the allocator settings of every atomshard process
    import torch

    from atomshard.comm import LocalGroup
    from atomshard.models.potential import NequIPConfig
    from atomshard.train.data import dataset_species
    from atomshard.train.statistics import compute_statistics
    from atomshard.train.study import train_steps

    frames, what = _frames(args.smoke)
    if args.smoke:
        args.steps, args.batch_size, args.channels = 2, 2, 4
    cutoff = 2.5 if args.smoke else 4.0
    species = dataset_species(frames)
    stats = compute_statistics([f.with_edges(cutoff) for f in frames], species)
    config = NequIPConfig(
        species=species, channels=args.channels, l_max=1, n_layers=2, cutoff=cutoff,
        avg_num_neighbors=stats.avg_num_neighbors, energy_shift=stats.energy_shift,
        energy_scale=stats.force_rms,
    )  # fmt: skip
    kw = dict(n_steps=args.steps, batch_size=args.batch_size)
    runs: dict[str, dict] = {}
    with LocalGroup(1, threads_per_rank=2, timeout_s=300) as group:  # same process set-up
        runs["1 rank"] = group.run(train_steps, frames, config, **kw)[0]
        f64 = dataclasses.replace(config, dtype="float64")
        runs["1 rank float64"] = group.run(train_steps, frames, f64, **kw)[0]
        runs["1 rank bfloat16"] = group.run(train_steps, frames, config,
                                            compute_dtype="bfloat16", **kw)[0]  # fmt: skip
    with LocalGroup(2, threads_per_rank=1, timeout_s=300) as group:
        for name, strategy, seed in (("2 ranks allreduce", "allreduce", 0),
                                     ("2 ranks ddp", "ddp", 0),
                                     ("2 ranks allreduce rerun", "allreduce", 0),
                                     ("2 ranks allreduce seed 1", "allreduce", 1)):  # fmt: skip
            runs[name] = group.run(train_steps, frames, config, strategy=strategy, seed=seed,
                                   **kw)[0]  # fmt: skip
    base = runs["2 ranks allreduce"]["loss"]
    report: dict = {
        "benchmark": "train",
        "data": what,
        "model": {
            "channels": config.channels,
            "l_max": 1,
            "n_layers": 2,
            "cutoff": cutoff,
            "dtype": config.dtype,
        },
        "steps": args.steps,
        "global_batch": args.batch_size,
        "backend": "gloo",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "torch": torch.__version__,
        "note": "2 shared CPU cores under load from other jobs; first step (warm-up) excluded",
        "runs": {},
    }
    print(f"{what}; {args.steps} steps, global batch {args.batch_size}")
    print(f"{'run':<26} {'structures/s':>12} {'median step s':>14} {'loss MAE vs base':>17}")
    for name, r in runs.items():
        steps = r["step_s"][1:] or r["step_s"]
        per_step = args.batch_size
        thr = per_step / statistics.median(steps)
        d = _diff(r["loss"], base)
        med = statistics.median(steps)
        report["runs"][name] = {**r, "structures_per_s": thr, "median_step_s": med, "vs_base": d}
        print(f"{name:<26} {thr:>12.2f} {statistics.median(steps):>14.4f} {d['mae']:>17.3e}")
    f32 = runs["1 rank"]
    for name in ("1 rank float64", "1 rank bfloat16"):
        r = report["runs"][name]
        r["vs_float32"] = _diff(r["loss"], f32["loss"])
        r["speed_vs_float32"] = r["structures_per_s"] / report["runs"]["1 rank"]["structures_per_s"]
        print(f"{name}: loss vs float32 MAE {r['vs_float32']['mae']:.3e} max "
              f"{r['vs_float32']['max']:.3e}; speed x{r['speed_vs_float32']:.2f}")  # fmt: skip
    if args.metrics is not None:
        report["training_run"] = _time_to(args.metrics)
        print(json.dumps(report["training_run"], indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_train.json").write_text(json.dumps(report, indent=1))
    _plot(report, args.out / "bench_train.png")
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.8))
    base = report["runs"]["2 ranks allreduce"]["loss"]
    for k, (name, r) in enumerate(report["runs"].items()):
        steps = range(1, len(r["loss"]) + 1)
        a.semilogy(steps, r["loss"], label=name, color=f"C{k}")
        if name != "2 ranks allreduce":
            diff = [x - y for x, y in zip(r["loss"], base)]
            b.plot(steps, diff, label=name, color=f"C{k}")
    a.set(xlabel="step", ylabel="training loss", title="loss trajectories")
    a.legend(fontsize=7)
    b.set(xlabel="step", ylabel="loss - 2-rank allreduce (seed 0)", title="differences")
    b.set_yscale("symlog", linthresh=1e-9)
    b.legend(fontsize=7)
    names = list(report["runs"])
    c.bar(range(len(names)), [report["runs"][n]["structures_per_s"] for n in names])
    c.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
    c.set(ylabel="structures / s", title="throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
