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
same model through e3nn's ``TensorProduct``, the reference path), ``nequip``
(``nequip.model.NequIPGNNModel`` from the nequip 0.19.1 in the project's venv) and, with
``--mace-python PATH``, ``mace``: mace-torch's closest model (``_train_mace.py`` says which
and how it differs) under the interpreter of its own environment, which mace-torch's
e3nn 0.4.4 pin keeps apart from the project's. Make that environment with::

    python3.11 -m venv /work/venvs/mace
    /work/venvs/mace/bin/pip install torch==2.13.0 mace-torch   # 0.3.16 was measured

    python benchmarks/bench_train_speed.py --out bench_out/train_speed
    python benchmarks/bench_train_speed.py --smoke --out /tmp/bts
    python benchmarks/bench_train_speed.py --curves 300 --impls atomshard nequip --threads 1

``--curves SECONDS`` instead trains each code for that many CPU seconds (all frames but
the last fifth; AdamW lr 5e-3, no EMA, the same loop for both) and writes the validation
energy and force MAE after every epoch against the training CPU time (``curves.json``,
``curves.png``): time to accuracy.

``--ddp`` instead measures data-parallel training on ``--ranks`` (default 2) local CPU
processes of ``--threads`` (first value) threads each, gloo, for ``atomshard`` and
``nequip``: every rank takes the strided shard ``batch[rank::ranks]`` of the same global
batch of ``batch_size x ranks`` structures (so each rank steps on ``--batch-size``
structures, as the serial runs do) and gradients are summed over the ranks before the
optimiser step. atomshard runs its trainer's own path (``ForceModel``, ``GradientSync``
with the default ``allreduce`` strategy that ``atomshard train --ranks 2`` uses: one
all-reduce of all gradients after backward, ``shard_loss``). nequip's
``NequIPGNNModel`` runs the plain loop above inside
``torch.nn.parallel.DistributedDataParallel`` (bucketed all-reduce overlapped with
backward), not through nequip's PyTorch Lightning trainer with its DDP strategy:
Lightning would add its trainer, data module, metrics and logging to the timed loop,
which the serial comparison leaves out, so the two rows would no longer measure the same
step; DDP around the same model is what Lightning's DDP strategy wraps it in. Both sides'
process groups are joined the same way (``atomshard.comm.init_communicator``, gloo on
localhost). Each epoch starts after a barrier; throughput is the atoms of the whole data
set per epoch over the slowest rank's epoch wall time, and over the CPU seconds of all
ranks together (``atoms/CPU-s``, the figure to trust on a loaded box); peak RSS is per
rank. Writes ``bench_train_ddp.json`` and ``bench_train_ddp.png``.

    python benchmarks/bench_train_speed.py --ddp --datasets water --threads 1 --rounds 2 \\
        --out bench_out/train_ddp
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
IMPLS = ("atomshard", "atomshard-e3nn", "nequip", "mace")
#: environment the mace interpreter must not inherit from this one
_FOREIGN_DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
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


def _model_info(dtype: str) -> dict:
    return {"channels": CHANNELS, "l_max": L_MAX, "n_layers": N_LAYERS, "cutoff": CUTOFF,
            "n_radial": N_RADIAL, "radial_hidden": list(RADIAL), "dtype": dtype,
            "parity": True}  # fmt: skip


def _batches(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def _atomshard_step(frames, config, impl: str, lr: float, comm=None):
    """A closure running one training step on a list of frame indices.

    With ``comm`` (data parallel) the indices are the global batch: this rank trains on
    its shard and the gradients are summed over the ranks, as the trainer does.
    """
    import torch

    from atomshard.models.potential import NequIPPotential
    from atomshard.train.loss import LossWeights
    from atomshard.train.parallel import (
        ForceModel,
        GradientSync,
        backward_to_parameters,
        shard_loss,
    )

    torch.manual_seed(0)
    model = NequIPPotential.from_config(config)
    if impl == "atomshard-e3nn":
        model.set_convolution(kind="e3nn")
    fm = ForceModel(model, stress=False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-6)
    samples = [f.with_edges(config.cutoff) for f in frames]
    weights = LossWeights(1.0, 1.0, 0.0)
    sync = GradientSync("allreduce", comm, fm) if comm is not None else None
    rank, world = (comm.rank, comm.world_size) if comm is not None else (0, 1)

    def step(indices: list[int]) -> float:
        loss = shard_loss(fm, [samples[i] for i in indices], rank, world, weights)
        opt.zero_grad(set_to_none=True)
        backward_to_parameters(loss, fm)  # as the trainer does
        if sync is not None:
            sync.after_backward()
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
    step.n_params = sum(p.numel() for p in model.parameters())  # type: ignore[attr-defined]
    return step


def _nequip_step(frames, config, lr: float, rank: int = 0, world: int = 1):
    """The same step with nequip's ``NequIPGNNModel`` (same sizes, statistics, loss).

    With ``world > 1`` the model is wrapped in ``DistributedDataParallel`` (the process
    group already joined) and each rank trains on its shard of the global batch.
    """
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
    forward = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model)
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
        data, energy, forces, n_atoms = data_of(indices[rank::world])
        out = forward({k: v.clone() for k, v in data.items()})
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
    step.n_params = sum(p.numel() for p in model.parameters())  # type: ignore[attr-defined]
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
    sys.path.insert(0, str(HERE))
    from _timing import time_epochs

    timing = time_epochs(step, batches, spec["epochs"], n_atoms)
    out = {
        **spec,
        "n_frames": len(frames),
        **timing,
        "n_params": step.n_params,  # type: ignore[attr-defined]
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


def run_ddp_rank(spec: dict) -> dict:
    """One rank of a data-parallel measurement (``--ddp``): its epochs' wall and CPU
    seconds and its peak RSS."""
    from atomshard.utils.process import configure_process

    configure_process()
    import torch

    from atomshard.comm import init_communicator

    torch.set_num_threads(spec["threads"])
    rank, world = spec["rank"], spec["ranks"]
    comm = init_communicator(backend="gloo", rank=rank, world_size=world,
                             master_addr="127.0.0.1", master_port=spec["port"])  # fmt: skip
    frames = load_frames(spec["dataset"], Path(spec["cache"]), spec["smoke"])
    config = _config(frames, spec["dtype"])
    if spec["impl"] == "nequip":
        step = _nequip_step(frames, config, 1e-3, rank, world)
    else:
        step = _atomshard_step(frames, config, spec["impl"], 1e-3, comm)
    batches = _batches(len(frames), spec["batch_size"] * world)  # global batches
    sys.path.insert(0, str(HERE))
    from _timing import time_epochs

    n_atoms = sum(f.n_atoms for f in frames)  # the whole set, over all ranks, per epoch
    timing = time_epochs(step, batches, spec["epochs"], n_atoms,
                         before_epoch=lambda: comm.barrier(what="epoch start"))  # fmt: skip
    comm.barrier(what="done")
    comm.close()
    return {"rank": rank, "n_frames": len(frames), **timing}


def _spawn_ranks(spec: dict) -> dict:
    """``spec["ranks"]`` worker processes of one data-parallel run, combined."""
    import os

    from atomshard.comm import free_port

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    procs = []
    for rank in range(spec["ranks"]):
        child = json.dumps({**spec, "rank": rank, "port": port})
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", child]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))  # fmt: skip
    ranks, error = [], None
    for rank, proc in enumerate(procs):
        try:
            out, err = proc.communicate(timeout=3600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, err = proc.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (err.strip().splitlines() or ["(no output)"])[-1]
            error = error or f"rank {rank}: {tail[:300]}"
            continue
        ranks.append(json.loads(lines[-1]))
    if error is not None:
        return {**spec, "error": error}
    n_atoms = ranks[0]["atoms_per_epoch"]
    wall = [max(r["epoch_s"][k] for r in ranks) for k in range(spec["epochs"])]
    cpu = [sum(r["epoch_cpu_s"][k] for r in ranks) for k in range(spec["epochs"])]
    return {
        **spec,
        "n_frames": ranks[0]["n_frames"],
        "atoms_per_epoch": n_atoms,
        "epoch_s": wall,
        "epoch_cpu_s": cpu,
        "atoms_per_s": n_atoms / statistics.median(wall),
        "atoms_per_cpu_s": n_atoms / statistics.median(cpu),
        "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in ranks],
        "last_loss": [r["last_loss"] for r in ranks],
    }


def ddp(args: argparse.Namespace) -> dict:
    """Data-parallel throughput of atomshard and nequip (see the module docstring):
    ``bench_train_ddp.json``, ``bench_train_ddp.png``."""
    args.out.mkdir(parents=True, exist_ok=True)
    impls = [i for i in args.impls if i in ("atomshard", "nequip")]
    threads = args.threads[0]
    runs: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for dataset in args.datasets:
            for impl in impls:
                spec = {"impl": impl, "dataset": dataset, "threads": threads,
                        "ranks": args.ranks, "epochs": args.epochs,
                        "batch_size": args.batch_size, "dtype": args.dtype,
                        "cache": str(args.cache or args.out), "smoke": args.smoke}  # fmt: skip
                res = _spawn_ranks(spec)
                runs.setdefault(f"{impl}|{dataset}", []).append(res)
                rate, cpu = res.get("atoms_per_s"), res.get("atoms_per_cpu_s")
                print(f"round {r + 1} {impl:<10} {dataset:<6} {args.ranks} ranks x {threads}t: "
                      + (f"{rate:8.1f} atoms/s, {cpu:8.1f} atoms/CPU-s, peak RSS/rank "
                         f"{max(res['peak_rss_mb_per_rank']):.0f} MB" if rate
                         else res.get("error", "?")), flush=True)  # fmt: skip
    table = []
    for key, rs in runs.items():
        impl, dataset = key.split("|")
        ok = [x for x in rs if "atoms_per_s" in x]
        table.append({
            "impl": impl, "dataset": dataset, "threads": threads, "ranks": args.ranks,
            "atoms_per_s": statistics.median(x["atoms_per_s"] for x in ok) if ok else None,
            "atoms_per_cpu_s": (statistics.median(x["atoms_per_cpu_s"] for x in ok)
                                if ok else None),
            "rounds": [x.get("atoms_per_s") for x in rs],
            "rounds_cpu": [x.get("atoms_per_cpu_s") for x in rs],
            "peak_rss_mb": max(max(x["peak_rss_mb_per_rank"]) for x in ok) if ok else None,
            "error": next((x["error"] for x in rs if "error" in x), None),
        })  # fmt: skip
    print(f"\n{'impl':<10} {'data':<6} {'ranks':>5} {'atoms/s':>9} {'x nequip':>9} "
          f"{'atoms/CPU-s':>12} {'x nequip':>9} {'RSS/rank MB':>12} {'x nequip':>9}")  # fmt: skip
    for row in table:
        ref = next((x for x in table if x["impl"] == "nequip" and x["dataset"] == row["dataset"]),
                   None)  # fmt: skip
        ok = ref and ref["atoms_per_s"] and row["atoms_per_s"]
        row["vs_nequip"] = row["atoms_per_s"] / ref["atoms_per_s"] if ok else None
        row["cpu_vs_nequip"] = row["atoms_per_cpu_s"] / ref["atoms_per_cpu_s"] if ok else None
        row["rss_vs_nequip"] = row["peak_rss_mb"] / ref["peak_rss_mb"] if ok else None
        f = lambda v, fmt: format(v, fmt) if v is not None else "-"  # noqa: E731
        print(f"{row['impl']:<10} {row['dataset']:<6} {row['ranks']:>5} "
              f"{f(row['atoms_per_s'], '9.1f')} {f(row['vs_nequip'], '9.2f')} "
              f"{f(row['atoms_per_cpu_s'], '12.1f')} {f(row['cpu_vs_nequip'], '9.2f')} "
              f"{f(row['peak_rss_mb'], '12.0f')} {f(row['rss_vs_nequip'], '9.2f')}"
              + (f"  ERROR {row['error']}" if row["error"] else ""))  # fmt: skip
    import torch

    report = {
        "benchmark": "train_speed_ddp",
        "model": _model_info(args.dtype),
        "ranks": args.ranks,
        "threads_per_rank": threads,
        "batch_size_per_rank": args.batch_size,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "torch": torch.__version__,
        "note": "2 CPU cores shared with other jobs; medians over interleaved rounds; "
        "atoms/CPU-s counts the CPU seconds of all ranks",
        "table": table,
        "runs": runs,
    }
    with open(args.out / "bench_train_ddp.json.tmp", "w") as fh:
        json.dump(report, fh, indent=1)
    (args.out / "bench_train_ddp.json.tmp").replace(args.out / "bench_train_ddp.json")
    _plot(table, args.out / "bench_train_ddp.png", ranks=args.ranks)
    return report


def _mace_payload(spec: dict) -> str:
    """What ``_train_mace.py`` reads on stdin: the spec, statistics and frames as arrays."""
    frames = load_frames(spec["dataset"], Path(spec["cache"]), spec["smoke"])
    config = _config(frames, spec["dtype"])
    stats = {"species": list(config.species), "energy_shift": list(config.energy_shift),
             "energy_scale": list(config.energy_scale),
             "avg_num_neighbors": float(config.avg_num_neighbors[0])}  # fmt: skip
    rows = [{"numbers": f.structure.species.tolist(), "positions": f.structure.positions.tolist(),
             "cell": f.structure.cell.tolist(), "pbc": [bool(b) for b in f.structure.pbc],
             "energy": f.energy, "forces": f.forces.tolist()} for f in frames]  # fmt: skip
    return json.dumps({"spec": spec, "stats": stats, "frames": rows})


def _spawn(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    stdin, env = None, None
    if spec["impl"] == "mace":
        import os

        cmd = [spec["python"], str(HERE / "_train_mace.py")]
        stdin = _mace_payload(spec)
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_DROP_ENV}
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False,
                         env=env)  # fmt: skip
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {**spec, "error": tail[:300]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench_out/train_speed"))
    p.add_argument("--cache", type=Path, default=None, help="bulk-set cache (default: --out)")
    p.add_argument("--impls", nargs="+", default=None, choices=IMPLS,
                   help="default: all but mace, and mace with --mace-python")  # fmt: skip
    p.add_argument("--mace-python", default=None,
                   help="python of an environment with mace-torch (the mace row)")  # fmt: skip
    p.add_argument("--mace-irreps", default=None,
                   help="mace hidden irreps (default: _train_mace.HIDDEN)")  # fmt: skip
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
    p.add_argument(
        "--ddp",
        action="store_true",
        help="instead: data-parallel throughput on --ranks local processes",
    )
    p.add_argument("--ranks", type=int, default=2, help="ranks of --ddp")
    p.add_argument(
        "--merge-curves",
        nargs="+",
        type=Path,
        default=None,
        help="instead: merge the curves.json of separate --curves runs into --out",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.impls is None:
        args.impls = [i for i in IMPLS if i != "mace" or args.mace_python]
    if "mace" in args.impls and not args.mace_python and args.child is None:
        p.error("--impls mace needs --mace-python PATH (see _train_mace.py)")
    if args.child is not None:
        spec = json.loads(args.child)
        if spec.get("curve_s"):
            print(json.dumps(run_curve(spec)))
        else:
            print(json.dumps(run_ddp_rank(spec) if "rank" in spec else run_child(spec)))
        return {}
    if args.merge_curves:
        return merge_curves(args.merge_curves, args.out)
    if args.curves:
        return curves(args)
    if args.smoke:
        args.epochs, args.rounds, args.threads = 1, 1, [1]
    if args.ddp:
        return ddp(args)
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
                            "smoke": args.smoke, "profile": args.profile and r == 0,
                            "python": args.mace_python,
                            "mace_irreps": args.mace_irreps}  # fmt: skip
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
        "model": _model_info(args.dtype),
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
        for impl in (i for i in args.impls if i != "mace"):  # no curves for mace
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
    return write_curves(args.out, out)


def reach_times(runs: list[dict], reference: str = "nequip") -> list[dict]:
    """For each data set: the reference code's last validation E and F MAE, and the
    training CPU seconds after which every code first had both at or below them."""
    rows = []
    for dataset in sorted({r["dataset"] for r in runs if r.get("curve")}):
        ref = next((r for r in runs if r.get("curve") and r["dataset"] == dataset
                    and r["impl"] == reference), None)  # fmt: skip
        if ref is None:
            continue
        target = ref["curve"][-1]
        for run in (r for r in runs if r.get("curve") and r["dataset"] == dataset):
            hit = next((row["cpu_s"] for row in run["curve"]
                        if row["energy_mae"] <= target["energy_mae"]
                        and row["force_mae"] <= target["force_mae"]), None)  # fmt: skip
            rows.append({"dataset": dataset, "impl": run["impl"],
                         "reference": reference, "reference_cpu_s": target["cpu_s"],
                         "reference_energy_mae": target["energy_mae"],
                         "reference_force_mae": target["force_mae"],
                         "final_cpu_s": run["curve"][-1]["cpu_s"],
                         "final_energy_mae": run["curve"][-1]["energy_mae"],
                         "final_force_mae": run["curve"][-1]["force_mae"],
                         "reaches_reference_at_cpu_s": hit})  # fmt: skip
    return rows


def merge_curves(paths: list[Path], out_dir: Path) -> dict:
    """One curves.json/png (and the reach table) from the curves.json of separate runs
    (e.g. each code run at the same time on a core of its own)."""
    out: dict = {"curve_s": None, "note": "merged: " + ", ".join(map(str, paths)), "runs": []}
    for path in paths:
        part = json.loads(Path(path).read_text())
        out["runs"].extend(part["runs"])
        out["curve_s"] = max(out["curve_s"] or 0, part.get("curve_s") or 0)
    return write_curves(out_dir, out)


def write_curves(out_dir: Path, out: dict) -> dict:
    """``curves.json`` (with the reach table) and ``curves.png`` of ``out`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out["reach"] = reach_times(out["runs"])
    for row in out["reach"]:
        hit = row["reaches_reference_at_cpu_s"]
        print(f"{row['impl']:<15} {row['dataset']:<6} reaches {row['reference']}'s "
              f"{row['reference_cpu_s']:.0f}-CPU-s MAE (E {1e3 * row['reference_energy_mae']:.2f}"
              f" meV/atom, F {1e3 * row['reference_force_mae']:.1f} meV/Å) at "
              + (f"{hit:.0f} CPU-s" if hit is not None else "never in its "
                 f"{row['final_cpu_s']:.0f} CPU-s"), flush=True)  # fmt: skip
    with open(out_dir / "curves.json.tmp", "w") as fh:
        json.dump(out, fh, indent=1)
    (out_dir / "curves.json.tmp").replace(out_dir / "curves.json")
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
    for row in out["reach"]:
        if row["impl"] == row["reference"]:
            axes[0].axhline(1e3 * row["reference_energy_mae"], color="grey", lw=0.6, ls=":")
            axes[1].axhline(1e3 * row["reference_force_mae"], color="grey", lw=0.6, ls=":")
    axes[0].set(xlabel="training CPU s", ylabel="val energy MAE (meV/atom)")
    axes[1].set(xlabel="training CPU s", ylabel="val force MAE (meV/Å)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = out_dir / "curves.tmp.png"
    fig.savefig(tmp, dpi=110)
    tmp.replace(out_dir / "curves.png")
    plt.close(fig)
    return out


def _plot(table: list[dict], path: Path, *, ranks: int = 1) -> None:
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
    on = f"{ranks} ranks x " if ranks > 1 else ""
    ax.set_xticks([i + width * (len(impls) - 1) / 2 for i in range(len(keys))],
                  [f"{d}\n{on}{t} thread{'s' if t > 1 else ''}" for d, t in keys])  # fmt: skip
    per = " per rank" if ranks > 1 else ""
    ax.set_title(f"force-loss training throughput\n(batch 4{per})", fontsize=9)
    ax.set(ylabel="training atoms / CPU-s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
