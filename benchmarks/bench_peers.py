"""Peers table: atomshard vs sevenn vs nequip vs mace, same model size, same inputs, same run.

Every implementation builds a randomly initialised model of the SevenNet SI size (32
channels, 4 interaction layers, l_max 3, cutoff 4 Å, species O and Si, radial MLP 64x64,
8 Bessel functions, float32 network) and runs it on the same rattled α-quartz n×n×n
supercells (``builtin_structure("quartz")``, 9 atoms per cell, rattled 0.01 Å with seed 0;
``--repeat 2 4 6`` = 72, 576, 1944 atoms). Each (implementation, size) runs in a fresh
worker process that applies :func:`atomshard.utils.process.configure_process` (passive
OpenMP waits, no mmap churn, ``--threads`` torch threads) before torch starts, so every
peer runs at the same best allocator/OpenMP settings; the workers of one size are
interleaved (each implementation once per ``--rounds`` round). A step is what an MD step
costs: neighbour list + energy + forces + stress (stress: every peer here supports it).
Reported per implementation and size: median, min and max wall time of one step over
``--steps`` steps after ``--warmup``, atom·steps/s, CPU seconds per step (median), peak RSS
(``ru_maxrss``) and the model's parameter count (which differs by each code's design at the
same size: nequip's per-species self-connection alone holds about 0.8 M of its 1.2 M).

Implementations:

* ``atomshard``: ``NequIPPotential.from_config(preset("si-config", species=(8, 14),
  avg_num_neighbors=30.0))`` after ``torch.manual_seed(0)`` (bench_potential.py's worker).
* ``sevenn``: a random sevenn model of the same architecture built by
  ``build_E3_equivariant_model`` and run through ``SevenNetCalculator`` (bench_utilisation.py's
  checkpoint builder and worker); skipped, and reported so, when sevenn is not importable.
* ``nequip`` and ``mace`` conflict with this environment's e3nn (mace-torch pins e3nn 0.4.4),
  so they run under the Python of their own environment, given as ``--peer-python
  NAME=PATH``. Their workers import neither atomshard nor its e3nn: the structure reaches
  them as plain arrays (numbers, positions, cell, pbc) on stdin, and ``configure_process`` is
  loaded from its source file alone. A peer without an interpreter is reported as not run.

  - nequip, the API of nequip >= 0.7 (written against 0.19.1): ``set_global_state()``, then
    ``nequip.model.NequIPGNNModel(seed=0, model_dtype="float32", type_names=["O", "Si"],
    r_max=4.0, num_layers=4, l_max=3, parity=True, num_features=32, radial_mlp_depth=2,
    radial_mlp_width=64, num_bessels=8, avg_num_neighbors=30.0, per_type_energy_scales=1.0,
    per_type_energy_shifts=0.0)`` in eager mode (parity=True gives both parities of every
    l <= 3, as our si-config and sevenn do); a step is ``nequip.data.from_ase`` +
    ``ChemicalSpeciesToAtomTypeMapper`` + ``NeighborListTransform(r_max=4.0)`` (matscipy) +
    ``model(data)``, whose ``ForceStressOutput`` gives energy, forces and stress.
  - mace (written against mace-torch 0.3.16): ``mace.modules.ScaleShiftMACE`` with hidden
    irreps ``32x0e+32x1o+32x2e+32x3o``, ``max_ell=3``, ``num_interactions=4``,
    ``correlation=3``, ``r_max=4.0``, ``num_bessel=8``, ``num_polynomial_cutoff=6``,
    ``radial_MLP=[64, 64]``, ``MLP_irreps=16x0e``, mace's default interaction blocks
    (``RealAgnosticInteractionBlock`` first, then ``RealAgnosticResidualInteractionBlock``),
    float32; a step is ``config_from_atoms`` + ``AtomicData.from_config`` (its neighbour
    list) + ``Batch.from_data_list`` + ``model(batch, compute_force=True,
    compute_stress=True)``.

Writes ``<out>/bench_peers.json`` and ``<out>/bench_peers.png`` (atom·steps/s and peak RSS
vs atoms, one line per implementation) and prints the table.

    python benchmarks/bench_peers.py --out bench_out/peers \\
        --peer-python mace=/tmp/peers/mace/bin/python \\
        --peer-python nequip=/tmp/peers/nequip/bin/python
    python benchmarks/bench_peers.py --smoke --out /tmp/bpeers
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

IMPLS = ("atomshard", "sevenn", "nequip", "mace")
#: peers that run under their own interpreter (``--peer-python NAME=PATH``)
FOREIGN = ("nequip", "mace")
#: the SevenNet SI benchmark model size, shared by every implementation
CHANNELS, L_MAX, N_LAYERS, CUTOFF = 32, 3, 4, 4.0
SPECIES = (8, 14)  # O, Si
AVG_NUM_NEIGHBORS = 30.0
BENCH = Path(__file__).resolve().parent
#: the one file a foreign worker takes from atomshard (stdlib-only; no package import)
PROCESS_PY = BENCH.parent / "src" / "atomshard" / "utils" / "process.py"
#: environment a foreign interpreter must not inherit from this one
_FOREIGN_DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


def _load(name: str, path: Path):
    """A module from a file, without importing the package it lives in."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _bench(name: str):
    """A sibling benchmark script (bench_potential, bench_utilisation) as a module."""
    return _load(f"_peers_{name}", BENCH / f"{name}.py")


def _mace_model():
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    irreps = "+".join(f"{CHANNELS}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(L_MAX + 1))
    model = modules.ScaleShiftMACE(
        r_max=CUTOFF,
        num_bessel=8,
        num_polynomial_cutoff=6,
        max_ell=L_MAX,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=N_LAYERS,
        num_elements=len(SPECIES),
        hidden_irreps=o3.Irreps(irreps),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(SPECIES)),
        avg_num_neighbors=AVG_NUM_NEIGHBORS,
        atomic_numbers=list(SPECIES),
        correlation=3,
        gate=modules.gate_dict["silu"],
        radial_MLP=[64, 64],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    return model.eval(), f"ScaleShiftMACE, hidden {irreps}, correlation 3, float32"


def _mace_step(model, atoms):
    from mace import data as mace_data
    from mace.tools import torch_geometric
    from mace.tools.utils import AtomicNumberTable

    z_table = AtomicNumberTable(list(SPECIES))

    def step() -> float:
        config = mace_data.config_from_atoms(atoms)
        graph = mace_data.AtomicData.from_config(config, z_table=z_table, cutoff=CUTOFF)
        batch = torch_geometric.Batch.from_data_list([graph])
        out = model(batch.to_dict(), training=False, compute_force=True, compute_stress=True)
        assert out["forces"] is not None and out["stress"] is not None
        return float(out["energy"].detach().sum())

    return step


def _nequip_model():
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    set_global_state()
    model = NequIPGNNModel(
        seed=0,
        model_dtype="float32",
        type_names=["O", "Si"],
        r_max=CUTOFF,
        num_layers=N_LAYERS,
        l_max=L_MAX,
        parity=True,
        num_features=CHANNELS,
        radial_mlp_depth=2,
        radial_mlp_width=64,
        num_bessels=8,
        avg_num_neighbors=AVG_NUM_NEIGHBORS,
        per_type_energy_scales=1.0,
        per_type_energy_shifts=0.0,
    )
    return model.eval(), "NequIPGNNModel (eager), parity, float32"


def _nequip_step(model, atoms):
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform

    transforms = [
        ChemicalSpeciesToAtomTypeMapper(model_type_names=["O", "Si"]),
        NeighborListTransform(r_max=CUTOFF),
    ]

    def step() -> float:
        data = from_ase(atoms)
        for transform in transforms:
            data = transform(data)
        out = model(data)
        assert AtomicDataDict.FORCE_KEY in out and AtomicDataDict.STRESS_KEY in out
        return float(out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().sum())

    return step


def _foreign_worker(impl: str, steps: int, warmup: int, threads: int) -> dict:
    """nequip or mace under its own interpreter: no atomshard import, structure on stdin."""
    _load("_peers_process", PROCESS_PY).configure_process(threads)  # before torch starts
    import numpy as np
    from ase import Atoms

    structure = json.loads(sys.stdin.read())
    atoms = Atoms(
        numbers=structure["numbers"],
        positions=np.asarray(structure["positions"], dtype=float),
        cell=np.asarray(structure["cell"], dtype=float),
        pbc=structure["pbc"],
    )
    import torch

    if impl == "mace":
        import mace

        model, described = _mace_model()
        step = _mace_step(model, atoms)
        version = getattr(mace, "__version__", None)
        if version is None:
            from mace.__version__ import __version__ as version
    else:
        import nequip

        model, described = _nequip_model()
        step = _nequip_step(model, atoms)
        version = nequip.__version__
    import e3nn

    from _timing import time_steps  # this folder is sys.path[0] in a worker

    result = time_steps(step, len(atoms), steps, warmup)
    result.update(
        threads=torch.get_num_threads(),
        model_description=described,
        n_params=sum(p.numel() for p in model.parameters()),
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "e3nn": e3nn.__version__,
            impl: version,
        },
    )
    return result


def _worker(impl, repeat, steps, warmup, threads, checkpoint=None) -> dict:
    if impl in FOREIGN:
        result = _foreign_worker(impl, steps, warmup, threads)
    elif impl == "atomshard":
        result = _bench("bench_potential")._worker(
            "atomshard", "si-config", repeat, steps, warmup, threads
        )
        import torch

        from atomshard.models.potential import NequIPPotential, preset

        torch.manual_seed(0)  # the same model again, counted after peak RSS was read
        model = NequIPPotential.from_config(
            preset("si-config", species=SPECIES, avg_num_neighbors=AVG_NUM_NEIGHBORS)
        )
        result["n_params"] = sum(p.numel() for p in model.parameters())
    else:
        result = _bench("bench_utilisation")._worker(
            "sevenn", checkpoint, repeat, steps, warmup, threads
        )
        import torch
        from sevenn.model_build import build_E3_equivariant_model

        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model = build_E3_equivariant_model(saved["config"])
        result["n_params"] = sum(p.numel() for p in model.parameters())
        result["model_description"] = "sevenn SevenNetCalculator (float32)"
    result["impl"] = impl
    result["repeat"] = repeat
    return result


def _structure(repeat: int) -> dict:
    """The shared input as plain arrays (what a foreign worker gets on stdin)."""
    from atomshard.io.structures import builtin_structure

    atoms = builtin_structure("quartz", (repeat, repeat, repeat))
    atoms.rattle(0.01, seed=0)
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
    }


def _run_worker(args, impl: str, repeat: int, structure: dict, checkpoint: Path | None) -> dict:
    python = args.peer_python.get(impl, sys.executable)
    cmd = [
        python, __file__, "--worker", impl, "--repeats", str(repeat),
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
    ]  # fmt: skip
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    env = dict(os.environ, MALLOC_MMAP_MAX_="0")  # as bench_utilisation: same for every peer
    if impl in FOREIGN:
        env = {k: v for k, v in env.items() if k not in _FOREIGN_DROP_ENV}
    done = subprocess.run(
        cmd,
        input=json.dumps(structure) if impl in FOREIGN else "",
        capture_output=True,
        text=True,
        timeout=args.timeout,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{impl} worker failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["n_atoms"] != len(structure["numbers"]):
        raise RuntimeError(f"{impl} worker ran {result['n_atoms']} atoms, not the shared input")
    return result


def _plan(args) -> dict[str, str | None]:
    """Per implementation: None (runs) or why it is not run."""
    why: dict[str, str | None] = {}
    for impl in IMPLS:
        if impl not in args.impls:
            why[impl] = "not run (not in --impls)"
        elif impl == "sevenn" and importlib.util.find_spec("sevenn") is None:
            why[impl] = "not run (sevenn not importable)"
        elif impl in FOREIGN and impl not in args.peer_python:
            why[impl] = "not run (no --peer-python)"
        elif impl in FOREIGN and args.smoke:
            why[impl] = "not run (--smoke)"
        else:
            why[impl] = None
    return why


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for impl in IMPLS:
        rows = sorted(
            (r for r in report["runs"] if r["impl"] == impl and r["status"] == "ok"),
            key=lambda r: r["n_atoms"],
        )
        if rows:
            atoms = [r["n_atoms"] for r in rows]
            axes[0].plot(atoms, [r["atom_steps_per_s"] for r in rows], "-o", label=impl)
            axes[1].plot(atoms, [r["peak_rss_mb"] for r in rows], "-o", label=impl)
    labels = ("atom·steps/s (energy+forces+stress)", "peak RSS (MB)")
    for ax, label in zip(axes, labels):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("atoms (α-quartz)")
        ax.set_ylabel(label)
        ax.legend()
    missing = [f"{i}: {p['status']}" for i, p in report["peers"].items() if p["status"] != "run"]
    if missing:
        fig.text(0.01, 0.01, "; ".join(missing), fontsize=7)
    fig.suptitle(
        f"SI-size models ({CHANNELS} ch, {N_LAYERS} layers, l_max {L_MAX}, {CUTOFF} Å), "
        f"{report['threads']} threads, {report['cpu']}"
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _peer_python(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or name not in FOREIGN or not path:
        raise argparse.ArgumentTypeError(
            f"expected NAME=PATH with NAME in {FOREIGN}, got {value!r}"
        )
    return name, path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/peers"))
    parser.add_argument("--repeat", type=int, nargs="+", default=[2, 4, 6], help="n×n×n cells")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument(
        "--peer-python",
        type=_peer_python,
        action="append",
        default=[],
        metavar="NAME=PATH",
        help=f"interpreter of the environment where peer NAME ({', '.join(FOREIGN)}) is installed",
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds per size")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per worker, seconds")
    parser.add_argument("--smoke", action="store_true", help="72 atoms, 1 step, ours and sevenn")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = _worker(
            args.worker, args.repeats, args.steps, args.warmup, args.threads, args.checkpoint
        )
        print(json.dumps(result))
        return result
    args.peer_python = dict(args.peer_python)
    for name, path in args.peer_python.items():
        if not os.access(path, os.X_OK):
            parser.error(f"--peer-python {name}={path}: not an executable file")
    if args.smoke:
        args.repeat, args.steps, args.warmup, args.rounds = [2], 1, 0, 1
    plan = _plan(args)
    running = [impl for impl in IMPLS if plan[impl] is None]
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = None
    if "sevenn" in running:
        models = args.out / "models"
        models.mkdir(exist_ok=True)
        checkpoint = _bench("bench_utilisation")._sevenn_checkpoint(
            CHANNELS, L_MAX, N_LAYERS, CUTOFF, models / f"sevenn_{CHANNELS}ch.pth"
        )
    report: dict = {
        "benchmark": "peers table (neighbour list + energy + forces + stress)",
        "model": {
            "channels": CHANNELS,
            "l_max": L_MAX,
            "n_layers": N_LAYERS,
            "cutoff": CUTOFF,
            "species": list(SPECIES),
            "avg_num_neighbors": AVG_NUM_NEIGHBORS,
            "init": "random",
        },
        "structure": "alpha-quartz n×n×n, rattled 0.01 Å (seed 0)",
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "cpu": platform.processor() or platform.machine(),
        "device": "cpu",
        "peers": {
            impl: {
                "python": args.peer_python.get(impl) if impl in FOREIGN else sys.executable,
                "status": plan[impl] or "run",
            }
            for impl in IMPLS
        },
        "not_run": {impl: why for impl, why in plan.items() if why is not None},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "runs": [],
    }
    if "sevenn" in running:
        import sevenn

        report["versions"]["sevenn"] = sevenn.__version__
    print(f"{'impl':10s} {'atoms':>6s} {'median s':>9s} {'atom·steps/s':>13s} {'cpu s':>7s} "
          f"{'peak RSS MB':>12s} {'params':>9s} {'time / ours':>12s}")  # fmt: skip
    for repeat in args.repeat:
        structure = _structure(repeat)
        n_atoms = len(structure["numbers"])
        rounds: dict[str, list[dict]] = {impl: [] for impl in running}
        failed: dict[str, str] = {}
        for _ in range(args.rounds):  # interleaved: every implementation once per round
            for impl in running:
                if impl in failed:
                    continue
                ckpt = checkpoint if impl == "sevenn" else None
                try:
                    rounds[impl].append(_run_worker(args, impl, repeat, structure, ckpt))
                except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
                    if impl == "atomshard":
                        raise
                    failed[impl] = f"failed: {str(exc).strip().splitlines()[-1][:300]}"
        pooled = {
            impl: _bench("bench_potential")._pool(rows) for impl, rows in rounds.items() if rows
        }
        ours = pooled.get("atomshard")
        for impl in IMPLS:
            if impl in pooled:
                r = pooled[impl]
                r["status"] = "ok"
                if ours is not None:
                    r["time_ratio_to_atomshard"] = r["median_s"] / ours["median_s"]
                report["runs"].append(r)
                print(
                    f"{impl:10s} {n_atoms:6d} {r['median_s']:9.3f} {r['atom_steps_per_s']:13.1f} "
                    f"{r['median_cpu_s']:7.2f} {r['peak_rss_mb']:12.0f} {r['n_params']:9d} "
                    f"{r.get('time_ratio_to_atomshard', float('nan')):12.2f}",
                    flush=True,
                )
            else:
                status = failed.get(impl) or plan[impl] or "failed"
                if impl in failed:
                    report["peers"][impl]["status"] = status
                report["runs"].append({"impl": impl, "n_atoms": n_atoms, "status": status})
                print(f"{impl:10s} {n_atoms:6d} {status}", flush=True)
    for impl in IMPLS:  # a foreign peer's versions, as its worker reported them
        rows = [r for r in report["runs"] if r["impl"] == impl and "versions" in r]
        if rows:
            report["peers"][impl]["versions"] = rows[0]["versions"]
    (args.out / "bench_peers.json").write_text(json.dumps(report, indent=2))
    _plot(report, args.out / "bench_peers.png")
    print(f"wrote {args.out / 'bench_peers.json'} and {args.out / 'bench_peers.png'}")
    return report


if __name__ == "__main__":
    main()
