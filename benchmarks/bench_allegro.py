"""atomshard's Allegro against nequip-allegro with the same weights, on liquid water.

The seed's small model (2 layers, 64 scalar / 64 tensor features, l_max 2, Allegro MLP
2 x 256, r_cut 6 Å, ZBL; nequip-allegro 0.8 makes the scalar embedding 64 wide) is built
once with nequip-allegro's ``AllegroModel`` (seeded) and converted; water boxes of
``n^3`` randomly oriented molecules on a cubic grid at 1 g/cm³ (192 atoms for n = 4 up to
5,184 for n = 12, the seed's single-rank water range). Each (size, implementation) runs in
a fresh subprocess with the same torch thread count: it builds the same edge list (our
neighbour list, fed to both models), warms up, times energy + forces + stress
evaluations and reports atom·steps/s and its peak RSS. A subprocess that runs out of the
memory cap (``--max-gib``, an address-space limit) is reported as such. ``--ranks 2``
adds atomshard's 1 -> 2 rank strong scaling on the largest box (local gloo ranks,
positions-only exchange).

Usage:
    python benchmarks/bench_allegro.py --out bench_out/allegro               # full (long)
    python benchmarks/bench_allegro.py --sizes 4 6 8 --threads 1 --steps 3
    python benchmarks/bench_allegro.py --smoke --out /tmp/allegro_smoke      # seconds

Writes ``allegro.json`` into ``--out`` and prints a table. Timings are wall-clock on a
possibly shared machine: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def water_box(n_side: int, seed: int = 0):
    """``n_side^3`` water molecules (O H H), random orientations on a cubic grid, 1 g/cm³."""
    import ase
    import numpy as np
    from scipy.spatial.transform import Rotation

    n = n_side**3
    side = (n * 18.015 / 0.60221) ** (1.0 / 3.0)  # Å: n * 18.015 g/mol / (1 g/cm³ N_A)
    angle = np.radians(104.52)
    mol = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0],
                    [0.9572 * np.cos(angle), 0.9572 * np.sin(angle), 0.0]])  # fmt: skip
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centres = (grid + 0.5) * (side / n_side)
    rot = Rotation.random(n, random_state=seed).as_matrix()
    pos = (centres[:, None, :] + np.einsum("nij,kj->nki", rot, mol)).reshape(-1, 3)
    return ase.Atoms("OHH" * n, positions=pos, cell=np.eye(3) * side, pbc=True)


def reference_model(dtype: str):
    """The seed's small Allegro in nequip-allegro (seeded, random weights), H and O."""
    from allegro.model import AllegroModel

    return AllegroModel(
        seed=1, model_dtype=dtype, r_max=6.0, type_names=["H", "O"], l_max=2,
        radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                               "num_bessels": 8, "polynomial_cutoff_p": 6},
        radial_chemical_embed_dim=32, scalar_embed_mlp_hidden_layers_depth=2,
        scalar_embed_mlp_hidden_layers_width=64, num_layers=2, num_scalar_features=64,
        num_tensor_features=64, allegro_mlp_hidden_layers_depth=2,
        allegro_mlp_hidden_layers_width=256, readout_mlp_hidden_layers_depth=1,
        readout_mlp_hidden_layers_width=128, readout_mlp_nonlinearity=None,
        avg_num_neighbors=80.0, per_type_energy_shifts={"H": -13.6, "O": -432.0},
        pair_potential={"_target_": "nequip.nn.pair_potential.ZBL", "units": "metal",
                        "chemical_species": ["H", "O"]},
    ).eval()  # fmt: skip


def run_one(impl: str, n_side: int, dtype: str, threads: int, steps: int, max_gib: float):
    """Time one implementation on one box in this process (call in a fresh process)."""
    if max_gib > 0:
        cap = int(max_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch

    sys.path.insert(0, str(HERE))
    from _timing import time_steps
    from atomshard.graph import AtomicGraph
    from atomshard.models.allegro import AllegroPotential
    from atomshard.models.allegro.convert import allegro_config_and_weights, nequip_global_state
    from atomshard.models.base import compute_properties

    torch.set_num_threads(threads)
    atoms = water_box(n_side)
    with nequip_global_state():
        reference = reference_model(dtype)
        config, state = allegro_config_and_weights(reference)
    graph = AtomicGraph.from_ase(atoms, config.cutoff)
    if impl == "atomshard":
        model = AllegroPotential(config)
        model.load_state_dict(state)
        model.eval()
        del reference

        def step() -> float:
            return float(compute_properties(model, graph, forces=True, stress=True).energy)
    else:
        types = (graph.species == 8).to(torch.int64)  # H -> 0, O -> 1
        data = {
            "pos": graph.positions, "edge_index": torch.stack([graph.dst, graph.src]),
            "edge_cell_shift": graph.shifts.to(torch.float64),
            "cell": graph.cell.reshape(1, 3, 3), "pbc": graph.pbc.reshape(1, 3),
            "atom_types": types, "batch": torch.zeros(graph.n_atoms, dtype=torch.int64),
            "num_atoms": torch.tensor([graph.n_atoms]),
        }  # fmt: skip

        def step() -> float:
            with nequip_global_state():
                return float(reference(dict(data))["total_energy"].detach().reshape(()))

    try:
        out = time_steps(step, graph.n_atoms, steps=steps, warmup=1)
    except (RuntimeError, MemoryError) as exc:  # the memory cap
        return {"impl": impl, "n_atoms": graph.n_atoms, "error": str(exc).splitlines()[0][:200]}
    out.update(impl=impl, n_side=n_side, n_edges=graph.n_edges, dtype=dtype, threads=threads)
    return out


def run_ranks(n_side: int, dtype: str, steps: int) -> dict:
    """atomshard on 1 and 2 local ranks (one thread each) on one box: seconds per step."""
    from atomshard.comm import launch
    from atomshard.models.allegro import AllegroPotential
    from atomshard.models.allegro.convert import allegro_config_and_weights, nequip_global_state
    from atomshard.models.checkpoint import save_checkpoint

    with nequip_global_state():
        config, state = allegro_config_and_weights(reference_model(dtype))
    model = AllegroPotential(config)
    model.load_state_dict(state)
    path = Path("/tmp") / f"bench_allegro_{dtype}.pt"
    save_checkpoint(path, model, model_type="allegro", config=config)
    atoms = water_box(n_side)
    out = {"n_atoms": len(atoms)}
    for n_ranks in (1, 2):
        res = launch(_rank_timing, n_ranks, str(path), steps=steps, threads_per_rank=1,
                     root_only={"atoms": atoms})  # fmt: skip
        out[f"s_per_step_{n_ranks}"] = res[0]
    out["strong_scaling_efficiency"] = out["s_per_step_1"] / (2 * out["s_per_step_2"])
    return out


def _rank_timing(comm, spec: str, *, atoms, steps: int) -> float:
    from atomshard.models.resolve import resolve_model
    from atomshard.runtime import DistributedEvaluator, as_structure

    model = resolve_model(spec)
    ev = DistributedEvaluator(model, comm, partition="lownn")
    structure = as_structure(atoms) if comm.rank == 0 else None
    ev.evaluate(structure)  # warm-up, plans
    comm.barrier(what="timing start")
    t0 = time.perf_counter()
    for _ in range(steps):
        ev.evaluate(structure)
    comm.barrier(what="timing end")
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 6, 8, 10, 12],
                   help="molecules per box edge (n^3 molecules, 3 n^3 atoms)")  # fmt: skip
    p.add_argument("--impls", nargs="+", default=["atomshard", "nequip-allegro"])
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--max-gib", type=float, default=20.0, help="address-space cap per run")
    p.add_argument("--ranks", action="store_true", help="also 1 -> 2 rank scaling")
    p.add_argument("--smoke", action="store_true", help="one tiny box, one step")
    p.add_argument("--out", default="bench_out/allegro")
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        impl, n = args.worker[0], int(args.worker[1])
        res = run_one(impl, n, args.dtype, args.threads, args.steps, args.max_gib)
        print("RESULT " + json.dumps(res))
        return 0
    if args.smoke:
        args.sizes, args.steps = [2], 1
    rows = []
    for n in args.sizes:
        for impl in args.impls:
            cmd = [sys.executable, __file__, "--worker", impl, str(n), "--dtype", args.dtype,
                   "--threads", str(args.threads), "--steps", str(args.steps),
                   "--max-gib", str(args.max_gib)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if lines:
                row = json.loads(lines[-1][7:])
            else:
                tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                row = {"impl": impl, "n_atoms": 3 * n**3, "error": f"rc {proc.returncode}: {tail}"}
            rows.append(row)
            if "error" in row:
                print(f"{impl:15s} {row['n_atoms']:6d} atoms  failed: {row['error']}", flush=True)
            else:
                print(f"{impl:15s} {row['n_atoms']:6d} atoms  {row['median_s']:8.3f} s/step  "
                      f"{row['atom_steps_per_s']:8.1f} atom·steps/s  peak RSS "
                      f"{row['peak_rss_mb']:8.0f} MB", flush=True)  # fmt: skip
    result = {
        "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dtype": args.dtype,
        "threads": args.threads, "rows": rows,
    }  # fmt: skip
    if args.ranks:
        scaling = run_ranks(max(args.sizes), args.dtype, args.steps)
        result["ranks"] = scaling
        print(f"1 -> 2 ranks on {scaling['n_atoms']} atoms: "
              f"{scaling['s_per_step_1']:.3f} -> {scaling['s_per_step_2']:.3f} s/step, "
              f"efficiency {scaling['strong_scaling_efficiency']:.0%}")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "allegro.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
