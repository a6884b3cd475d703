"""Force-loss training throughput: atomshard against nequip 0.19 on the same model and data.

One training step is forward + forces (autograd, ``create_graph``) + per-atom-energy and
force MSE loss + backward + AdamW step, on batches of 4 structures. The model is the same
size in both codes: 32 channels, l_max 2, O(3) parity, 3 layers, 5 Å cutoff, 8 Bessel
functions, polynomial envelope p = 6, radial MLP 2 x 64, float32 body; shifts, scales and
the neighbour normaliser from the data. Neighbour lists are built once per structure,
outside the timing, for both codes (atomshard caches them across epochs; nequip's data
pipeline would too). nequip runs eagerly (no ``torch.compile``), as it does by default.

Data sets:

- ``water``: the n2p2 RPBE-D3 water set in shared data (20 frames of 48-192 atoms,
  Bohr/Hartree converted);
- ``bulk``: 24 rattled (0.1 Å) and strained (±3 %) 64-atom diamond-silicon cells,
  labelled by SevenNet-0 through atomshard; generated once and cached as extxyz under
  ``--cache``.

Every (implementation, data set, threads) run is a fresh process; rounds are interleaved
and the median over rounds is reported. Throughput is atoms per second over whole epochs
(every structure once per epoch), after one warm-up epoch, both per wall second and per
CPU second of the process (``time.process_time``: on a box shared with other jobs the
wall figure mostly measures the load; with 2 threads the CPU figure counts both).
Peak RSS is the process's.
``--profile`` also writes torch.profiler tables of atomshard's step (``profile_*.txt``).

Implementations: ``atomshard`` (the default fused convolution), ``atomshard-e3nn`` (the
same model through e3nn's ``TensorProduct``, the reference path) and ``nequip``
(``nequip.model.NequIPGNNModel`` from the nequip 0.19.1 in the project's venv).

    python benchmarks/bench_train_speed.py --out bench_out/train_speed
    python benchmarks/bench_train_speed.py --smoke --out /tmp/bts
    python benchmarks/bench_train_speed.py --curves 300 --impls atomshard nequip --threads 1

``--curves SECONDS`` instead trains each code for that many CPU seconds (all frames but
the last fifth; AdamW lr 5e-3, no EMA, the same loop for both) and writes the validation
energy and force MAE after every epoch against the training CPU time (``curves.json``,
``curves.png``): time to accuracy.
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

HERE = Path(__file__).resolve().parent
WATER = HERE.parents[1] / "shared/data/n2p2/H2O_RPBE-D3/train/input.data"
IMPLS = ("atomshard", "atomshard-e3nn", "nequip")
#: the model of the comparison (both codes)
CHANNELS, L_MAX, N_LAYERS, CUTOFF, N_RADIAL, RADIAL = 32, 2, 3, 5.0, 8, (64, 64)


def bulk_frames(cache: Path, n: int = 24, seed: int = 0):
    """``n`` rattled and strained 64-atom silicon cells labelled by SevenNet-0 (cached)."""
    from atomshard.train.data import read_dataset

    path = cache / f"si64_sevennet0_{n}_{seed}.extxyz"
    if not path.exists():
        import ase.io
        import numpy as np
        from ase.build import bulk
        from ase.calculators.singlepoint import SinglePointCalculator

        from atomshard.graph import AtomicGraph
        from atomshard.models.base import compute_properties
        from atomshard.models.resolve import resolve_model

        model = resolve_model("sevennet-0")
        rng = np.random.default_rng(seed)
        frames = []
        for _ in range(n):
            atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
            strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
            atoms.set_cell(atoms.cell @ (0.5 * (strain + strain.T)), scale_atoms=True)
            atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
            props = compute_properties(model, AtomicGraph.from_ase(atoms, 5.0), stress=True)
            atoms.calc = SinglePointCalculator(
                atoms, energy=float(props.energy), forces=props.forces.detach().numpy(),
                stress=props.stress.detach().numpy().reshape(3, 3)[[0, 1, 2, 1, 0, 0],
                                                                   [0, 1, 2, 2, 2, 1]],
            )  # fmt: skip
            frames.append(atoms)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.extxyz")
        ase.io.write(tmp, frames, format="extxyz")
        tmp.replace(path)
    return read_dataset(path)


def load_frames(dataset: str, cache: Path, smoke: bool):
    """The labelled structures of ``dataset`` (``smoke``: the first 4)."""
    from atomshard.train.data import read_dataset

    if dataset == "water":
        frames = read_dataset(WATER, length_unit="bohr", energy_unit="hartree")
    else:
        frames = bulk_frames(cache, n=4 if smoke else 24)
    return frames[:4] if smoke else frames


def _config(frames, dtype: str):
    from atomshard.models.potential import NequIPConfig
    from atomshard.train.data import dataset_species
    from atomshard.train.statistics import compute_statistics

    species = dataset_species(frames)
    stats = compute_statistics([f.with_edges(CUTOFF) for f in frames], species)
    return NequIPConfig(
        species=species, channels=CHANNELS, l_max=L_MAX, n_layers=N_LAYERS, cutoff=CUTOFF,
        n_radial=N_RADIAL, radial_hidden=RADIAL, avg_num_neighbors=stats.avg_num_neighbors,
        energy_shift=stats.energy_shift, energy_scale=stats.force_rms, dtype=dtype,
    )  # fmt: skip


def _batches(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def _atomshard_step(frames, config, impl: str, lr: float):
    """A closure running one training step on a list of frame indices."""
    import torch

    from atomshard.models.potential import NequIPPotential
    from atomshard.train.loss import LossWeights
    from atomshard.train.parallel import ForceModel, backward_to_parameters, shard_loss

    torch.manual_seed(0)
    model = NequIPPotential.from_config(config)
    if impl == "atomshard-e3nn":
        model.set_convolution(kind="e3nn")
    fm = ForceModel(model, stress=False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-6)
    samples = [f.with_edges(config.cutoff) for f in frames]
    weights = LossWeights(1.0, 1.0, 0.0)

    def step(indices: list[int]) -> float:
        loss = shard_loss(fm, [samples[i] for i in indices], 0, 1, weights)
        opt.zero_grad(set_to_none=True)
        backward_to_parameters(loss, fm)  # as the trainer does
        opt.step()
        return float(loss.detach())

    def evaluate(indices: list[int]) -> tuple[float, float]:
        """Energy MAE (eV/atom) and force MAE (eV/Å) on ``indices``."""
        from atomshard.train.batch import collate, predict_batch

        model.eval()
        batch = collate([samples[i] for i in indices])
        pred = predict_batch(model, batch, forces=True)
        model.train()
        assert pred.forces is not None
        de = ((pred.energy - batch.energy) / batch.n_atoms).abs().mean()
        return float(de), float((pred.forces - batch.forces).abs().mean())

    step.evaluate = evaluate  # type: ignore[attr-defined]
    return step


def _nequip_step(frames, config, lr: float):
    """The same step with nequip's ``NequIPGNNModel`` (same sizes, statistics, loss)."""
    import torch
    from ase.data import chemical_symbols
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    from atomshard.train.batch import collate

    set_global_state()
    names = [chemical_symbols[z] for z in config.species]
    model = NequIPGNNModel(
        seed=0, model_dtype=config.dtype, r_max=config.cutoff, type_names=names,
        num_layers=N_LAYERS, l_max=L_MAX, parity=True, num_features=CHANNELS,
        radial_mlp_depth=len(RADIAL), radial_mlp_width=RADIAL[0], num_bessels=N_RADIAL,
        polynomial_cutoff_p=6, avg_num_neighbors=float(config.avg_num_neighbors[0]),
        per_type_energy_shifts=dict(zip(names, config.energy_shift)),
        per_type_energy_scales=dict(zip(names, config.energy_scale)),
    )  # fmt: skip
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-6)
    samples = [f.with_edges(config.cutoff) for f in frames]
    type_of = {z: i for i, z in enumerate(config.species)}
    cache: dict[tuple[int, ...], tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def data_of(indices: list[int]):
        key = tuple(indices)
        if key not in cache:  # built once per batch, as atomshard's collate is cheap
            b = collate([samples[i] for i in indices])
            g = b.graph
            types = torch.tensor([type_of[int(z)] for z in g.species], dtype=torch.int64)
            counts = b.n_atoms.to(torch.int64)
            data = {
                "pos": g.positions, "edge_index": torch.stack([g.dst, g.src]),
                "edge_cell_shift": g.shifts.to(torch.float64), "cell": b.cells,
                "pbc": b.periodic[:, None].expand(-1, 3).clone(), "atom_types": types,
                "batch": b.system_idx, "num_atoms": counts,
            }  # fmt: skip
            cache[key] = (data, b.energy, b.forces, b.n_atoms)
        return cache[key]

    def step(indices: list[int]) -> float:
        data, energy, forces, n_atoms = data_of(indices)
        out = model({k: v.clone() for k, v in data.items()})
        de = (out["total_energy"].reshape(-1) - energy) / n_atoms
        loss = (de**2).mean() + ((out["forces"] - forces) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def evaluate(indices: list[int]) -> tuple[float, float]:
        data, energy, forces, n_atoms = data_of(indices)
        model.eval()
        out = model({k: v.clone() for k, v in data.items()})
        model.train()
        de = ((out["total_energy"].detach().reshape(-1) - energy) / n_atoms).abs().mean()
        return float(de), float((out["forces"].detach() - forces).abs().mean())

    step.evaluate = evaluate  # type: ignore[attr-defined]
    return step


def run_curve(spec: dict) -> dict:
    """Time to accuracy: train on all frames but the last ``n_val`` for ``curve_s`` CPU
    seconds of training steps (shuffled batches, AdamW lr 5e-3, no EMA, the same loop for
    both codes), validating after every epoch (not counted in the time)."""
    import random

    from atomshard.utils.process import configure_process

    configure_process()
    import torch

    torch.set_num_threads(spec["threads"])
    frames = load_frames(spec["dataset"], Path(spec["cache"]), spec["smoke"])
    n_val = max(len(frames) // 5, 1)
    config = _config(frames[:-n_val], spec["dtype"])  # statistics of the training frames
    if spec["impl"] == "nequip":
        step = _nequip_step(frames, config, 5e-3)
    else:
        step = _atomshard_step(frames, config, spec["impl"], 5e-3)
    train_idx = list(range(len(frames) - n_val))
    val_idx = list(range(len(frames) - n_val, len(frames)))
    rng = random.Random(0)
    rows, used = [], 0.0
    while used < spec["curve_s"]:
        order = train_idx[:]
        rng.shuffle(order)
        c0 = time.process_time()
        for b in _batches(len(order), spec["batch_size"]):
            step([order[i] for i in b])
        used += time.process_time() - c0
        e_mae, f_mae = step.evaluate(val_idx)  # type: ignore[attr-defined]
        rows.append({"cpu_s": used, "energy_mae": e_mae, "force_mae": f_mae})
    return {**spec, "curve": rows,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}  # fmt: skip


def run_child(spec: dict) -> dict:
    """One (implementation, data set, threads) measurement in this process."""
    from atomshard.utils.process import configure_process

    configure_process()
    import torch

    torch.set_num_threads(spec["threads"])
    frames = load_frames(spec["dataset"], Path(spec["cache"]), spec["smoke"])
    config = _config(frames, spec["dtype"])
    impl = spec["impl"]
    if impl == "nequip":
        step = _nequip_step(frames, config, 1e-3)
    else:
        step = _atomshard_step(frames, config, impl, 1e-3)
    batches = _batches(len(frames), spec["batch_size"])
    n_atoms = sum(f.n_atoms for f in frames)
    for b in batches:  # warm-up epoch
        step(b)
    epoch_s, epoch_cpu_s, losses = [], [], []
    for _ in range(spec["epochs"]):
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            losses.append(step(b))
        epoch_s.append(time.perf_counter() - t0)
        epoch_cpu_s.append(time.process_time() - c0)
    out = {
        **spec,
        "n_frames": len(frames),
        "atoms_per_epoch": n_atoms,
        "epoch_s": epoch_s,
        "epoch_cpu_s": epoch_cpu_s,
        "atoms_per_s": n_atoms / statistics.median(epoch_s),
        "atoms_per_cpu_s": n_atoms / statistics.median(epoch_cpu_s),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "last_loss": losses[-1],
    }
    if spec.get("profile") and impl != "nequip":
        from torch.profiler import profile

        with profile() as prof:
            for b in batches:
                step(b)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        name = f"profile_{impl}_{spec['dataset']}_{spec['threads']}t.txt"
        (Path(spec["out"]) / name).write_text(table)
    return out


def _spawn(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {**spec, "error": tail[:300]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench_out/train_speed"))
    p.add_argument("--cache", type=Path, default=None, help="bulk-set cache (default: --out)")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--datasets", nargs="+", default=["water", "bulk"], choices=["water", "bulk"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per run")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--profile", action="store_true", help="torch.profiler tables of atomshard")
    p.add_argument("--smoke", action="store_true", help="4 frames, 1 epoch, 1 round, 1 thread")
    p.add_argument(
        "--curves",
        type=float,
        default=0.0,
        help="instead: time-to-accuracy curves, this many training CPU-s per code",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        spec = json.loads(args.child)
        print(json.dumps(run_curve(spec) if spec.get("curve_s") else run_child(spec)))
        return {}
    if args.curves:
        return curves(args)
    if args.smoke:
        args.epochs, args.rounds, args.threads = 1, 1, [1]
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.out
    runs: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for threads in args.threads:
            for dataset in args.datasets:
                for impl in args.impls:
                    spec = {"impl": impl, "dataset": dataset, "threads": threads,
                            "epochs": args.epochs, "batch_size": args.batch_size,
                            "dtype": args.dtype, "cache": str(cache), "out": str(args.out),
                            "smoke": args.smoke, "profile": args.profile and r == 0}  # fmt: skip
                    res = _spawn(spec)
                    runs.setdefault(f"{impl}|{dataset}|{threads}", []).append(res)
                    rate, cpu = res.get("atoms_per_s"), res.get("atoms_per_cpu_s")
                    print(f"round {r + 1} {impl:<15} {dataset:<6} {threads}t: "
                          + (f"{rate:8.1f} atoms/s, {cpu:8.1f} atoms/CPU-s" if rate
                             else res.get("error", "?")), flush=True)  # fmt: skip
    table = []
    for key, rs in runs.items():
        impl, dataset, threads = key.split("|")
        ok = [x for x in rs if "atoms_per_s" in x]
        row = {"impl": impl, "dataset": dataset, "threads": int(threads),
               "atoms_per_s": statistics.median(x["atoms_per_s"] for x in ok) if ok else None,
               "atoms_per_cpu_s": (statistics.median(x["atoms_per_cpu_s"] for x in ok)
                                   if ok else None),
               "rounds": [x.get("atoms_per_s") for x in rs],
               "peak_rss_mb": max(x["peak_rss_mb"] for x in ok) if ok else None,
               "error": next((x["error"] for x in rs if "error" in x), None)}  # fmt: skip
        table.append(row)
    for row in table:
        ref = next((x for x in table if x["impl"] == "nequip" and x["dataset"] == row["dataset"]
                    and x["threads"] == row["threads"]), None)  # fmt: skip
        ok = ref and ref["atoms_per_s"] and row["atoms_per_s"]
        row["vs_nequip"] = row["atoms_per_s"] / ref["atoms_per_s"] if ok else None
        row["cpu_vs_nequip"] = row["atoms_per_cpu_s"] / ref["atoms_per_cpu_s"] if ok else None
        row["rss_vs_nequip"] = row["peak_rss_mb"] / ref["peak_rss_mb"] if ok else None
    print(f"\n{'impl':<15} {'data':<6} {'thr':>3} {'atoms/s':>9} {'x nequip':>9} "
          f"{'atoms/CPU-s':>12} {'x nequip':>9} {'peak RSS MB':>12} "
          f"{'RSS x nequip':>13}")  # fmt: skip
    for row in table:
        f = lambda v, fmt: format(v, fmt) if v is not None else "-"  # noqa: E731
        print(f"{row['impl']:<15} {row['dataset']:<6} {row['threads']:>3} "
              f"{f(row['atoms_per_s'], '9.1f')} {f(row['vs_nequip'], '9.2f')} "
              f"{f(row['atoms_per_cpu_s'], '12.1f')} {f(row['cpu_vs_nequip'], '9.2f')} "
              f"{f(row['peak_rss_mb'], '12.0f')} {f(row['rss_vs_nequip'], '13.2f')}"
              + (f"  ERROR {row['error']}" if row["error"] else ""))  # fmt: skip
    import torch

    report = {
        "benchmark": "train_speed",
        "model": {
            "channels": CHANNELS,
            "l_max": L_MAX,
            "n_layers": N_LAYERS,
            "cutoff": CUTOFF,
            "n_radial": N_RADIAL,
            "radial_hidden": list(RADIAL),
            "dtype": args.dtype,
            "parity": True,
        },
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "torch": torch.__version__,
        "note": "2 CPU cores shared with other jobs; medians over interleaved rounds",
        "table": table,
        "runs": runs,
    }
    with open(args.out / "bench_train_speed.json.tmp", "w") as fh:
        json.dump(report, fh, indent=1)
    (args.out / "bench_train_speed.json.tmp").replace(args.out / "bench_train_speed.json")
    _plot(table, args.out / "bench_train_speed.png")
    return report


def curves(args: argparse.Namespace) -> dict:
    """Validation E and F MAE against training CPU time, per implementation and data set
    (1 thread each unless ``--threads`` says otherwise): ``curves.json``, ``curves.png``."""
    args.out.mkdir(parents=True, exist_ok=True)
    out: dict = {"curve_s": args.curves, "note": "2 shared CPU cores; CPU seconds of training",
                 "runs": []}  # fmt: skip
    for dataset in args.datasets:
        for impl in args.impls:
            spec = {"impl": impl, "dataset": dataset, "threads": args.threads[0],
                    "batch_size": args.batch_size, "dtype": args.dtype,
                    "cache": str(args.cache or args.out), "out": str(args.out),
                    "smoke": args.smoke, "curve_s": args.curves}  # fmt: skip
            res = _spawn(spec)
            out["runs"].append(res)
            last = (res.get("curve") or [{}])[-1]
            print(f"{impl:<15} {dataset:<6} epochs {len(res.get('curve') or [])}: "
                  f"E MAE {1e3 * last.get('energy_mae', float('nan')):.2f} meV/atom, "
                  f"F MAE {1e3 * last.get('force_mae', float('nan')):.1f} meV/Å "
                  f"{res.get('error', '')}", flush=True)  # fmt: skip
    with open(args.out / "curves.json.tmp", "w") as fh:
        json.dump(out, fh, indent=1)
    (args.out / "curves.json.tmp").replace(args.out / "curves.json")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for res in (r for r in out["runs"] if r.get("curve")):
        t = [row["cpu_s"] for row in res["curve"]]
        label = f"{res['impl']} {res['dataset']}"
        style = "-" if res["dataset"] == "water" else "--"
        axes[0].semilogy(t, [1e3 * r["energy_mae"] for r in res["curve"]], style,
                         color=f"C{IMPLS.index(res['impl'])}", label=label)  # fmt: skip
        axes[1].semilogy(t, [1e3 * r["force_mae"] for r in res["curve"]], style,
                         color=f"C{IMPLS.index(res['impl'])}", label=label)  # fmt: skip
    axes[0].set(xlabel="training CPU s", ylabel="val energy MAE (meV/atom)")
    axes[1].set(xlabel="training CPU s", ylabel="val force MAE (meV/Å)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = args.out / "curves.tmp.png"
    fig.savefig(tmp, dpi=110)
    tmp.replace(args.out / "curves.png")
    plt.close(fig)
    return out


def _plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["dataset"], r["threads"]) for r in table})
    impls = [i for i in IMPLS if any(r["impl"] == i for r in table)]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(keys), 3.6))
    width = 0.8 / max(len(impls), 1)
    for k, impl in enumerate(impls):
        vals = [next((r["atoms_per_cpu_s"] or 0 for r in table if r["impl"] == impl
                      and (r["dataset"], r["threads"]) == key), 0) for key in keys]  # fmt: skip
        ax.bar([i + k * width for i in range(len(keys))], vals, width, label=impl)
    ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(keys))],
                  [f"{d}\n{t} thread{'s' if t > 1 else ''}" for d, t in keys])  # fmt: skip
    ax.set(ylabel="training atoms / CPU-s", title="force-loss training throughput (batch 4)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
