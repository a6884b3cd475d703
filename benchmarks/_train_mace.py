"""The mace-torch row of bench_train_speed.py: the same force-loss training step with MACE.

Runs under the interpreter of its own environment (mace-torch 0.3.16 pins e3nn 0.4.4,
which the project's environment cannot hold), so it imports neither atomshard nor the
project's e3nn: bench_train_speed.py sends one JSON object on stdin — the run's spec
(``threads``, ``epochs``, ``batch_size``, ``dtype``), the model statistics atomshard
fitted on the data (``species``, ``energy_shift``, ``energy_scale``,
``avg_num_neighbors``) and the frames as plain arrays (``numbers``, ``positions``,
``cell``, ``pbc``, ``energy``, ``forces``) — and reads one JSON line back, with the keys
of its own workers. ``configure_process`` is loaded from its source file alone.

The model, the closest MACE to the comparison's NequIP model: ``ScaleShiftMACE`` with
hidden irreps ``32x0e+32x1o+32x2e`` (``--mace-irreps`` of bench_train_speed.py may give
others, e.g. both parities), edge spherical harmonics up to l = 2
(``max_ell=2``), 3 interactions (MACE usually uses 2), ``correlation=1`` (MACE's
NequIP-like setting: one two-body message per layer, no higher body order), 5 Å,
8 Bessel functions, polynomial envelope p = 6, radial MLP 64 x 64, mace's default
interaction blocks (``RealAgnosticInteractionBlock`` first, then
``RealAgnosticResidualInteractionBlock``), readout MLP ``16x0e``, float32. Differences
that remain: the hidden features have one parity per l (``0e, 1o, 2e``; the NequIP model
carries both, so it has more features per layer; MACE with both parities,
``32x0e+32x0o+32x1o+32x1e+32x2e+32x2o``, builds and trains but is about 3x slower and
4x larger in memory than with one); the per-species energy shifts enter as
MACE's ``atomic_energies`` (the same per-atom constants); the energy scale is one number
(the mean of the per-species force RMS values) where NequIP has one per species. A
one-element set (the Si cells) gets an unused second element, see :func:`padded_species`.

A step: forward with ``compute_force=True`` (mace takes the forces by autograd with
``create_graph`` when ``training=True``), per-atom energy + force MSE, backward, AdamW
(lr 1e-3, weight decay 1e-6); batches of ``batch_size`` frames in file order, their
graphs (mace's neighbour list) built once before the timing.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
from pathlib import Path

#: MACE's usual hidden features: one parity per l (``spec["mace_irreps"]`` may say other)
HIDDEN = "32x0e+32x1o+32x2e"
PROCESS_PY = Path(__file__).resolve().parents[1] / "src" / "atomshard" / "utils" / "process.py"


def _configure(threads: int) -> None:
    spec = importlib.util.spec_from_file_location("_train_mace_process", PROCESS_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.configure_process(threads)


def build_model(stats: dict, dtype: str = "float32", hidden: str = HIDDEN):
    """The ScaleShiftMACE of the module docstring, seeded, in ``dtype``."""
    import mace  # noqa: F401  (first: it lets e3nn 0.4.4 load its constants under torch 2.6+)
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    torch.set_default_dtype(getattr(torch, dtype))
    torch.manual_seed(0)
    scales = stats["energy_scale"]
    model = modules.ScaleShiftMACE(
        r_max=5.0,
        num_bessel=8,
        num_polynomial_cutoff=6,
        max_ell=2,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=3,
        num_elements=len(stats["species"]),
        hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.asarray(stats["energy_shift"], dtype=float),
        avg_num_neighbors=float(stats["avg_num_neighbors"]),
        atomic_numbers=list(stats["species"]),
        correlation=1,
        gate=modules.gate_dict["silu"],
        radial_MLP=[64, 64],
        atomic_inter_scale=float(sum(scales) / len(scales)),
        atomic_inter_shift=0.0,
    )
    return model


def padded_species(stats: dict) -> dict:
    """``stats`` with a second, unused element: mace-torch 0.3.16 with ``correlation=1``
    fails on a one-element model (``symmetric_contraction``'s ``out.view`` of a
    non-contiguous tensor); the extra one-hot column is always zero, so energies and
    forces are those of the one-element model."""
    z = stats["species"][0]
    extra = 1 if z != 1 else 2
    return {**stats, "species": sorted([z, extra]),
            "energy_shift": [0.0, *stats["energy_shift"]] if extra < z
            else [*stats["energy_shift"], 0.0],
            "energy_scale": stats["energy_scale"] * 2}  # fmt: skip


def run(payload: dict) -> dict:
    spec, stats = payload["spec"], payload["stats"]
    _configure(spec["threads"])
    import ase
    import numpy as np
    import torch
    from mace import data as mace_data
    from mace.tools import torch_geometric
    from mace.tools.utils import AtomicNumberTable

    frames = payload["frames"]
    if len(stats["species"]) == 1:
        stats = padded_species(stats)
    hidden = spec.get("mace_irreps") or HIDDEN
    model = build_model(stats, spec["dtype"], hidden)
    real = torch.get_default_dtype()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-6)
    z_table = AtomicNumberTable(list(stats["species"]))
    graphs = []
    for f in frames:
        atoms = ase.Atoms(numbers=f["numbers"], positions=np.asarray(f["positions"]),
                          cell=np.asarray(f["cell"]), pbc=f["pbc"])  # fmt: skip
        config = mace_data.config_from_atoms(atoms)
        graphs.append(mace_data.AtomicData.from_config(config, z_table=z_table, cutoff=5.0))
    bs = spec["batch_size"]
    batches = []
    for i in range(0, len(frames), bs):
        chunk = frames[i : i + bs]
        batch = torch_geometric.Batch.from_data_list(graphs[i : i + bs]).to_dict()
        energy = torch.tensor([f["energy"] for f in chunk], dtype=real)
        forces = torch.tensor(np.concatenate([f["forces"] for f in chunk]), dtype=real)
        n_atoms = torch.tensor([len(f["numbers"]) for f in chunk], dtype=real)
        batches.append((batch, energy, forces, n_atoms))

    def step(item) -> float:
        batch, energy, forces, n_atoms = item
        data = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = model(data, training=True, compute_force=True)
        de = (out["energy"] - energy) / n_atoms
        loss = (de**2).mean() + ((out["forces"] - forces) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    n_atoms = sum(len(f["numbers"]) for f in frames)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _timing import time_epochs

    timing = time_epochs(step, batches, spec["epochs"], n_atoms)
    import e3nn
    import mace

    version = getattr(mace, "__version__", None)
    if version is None:
        from mace.__version__ import __version__ as version
    return {
        **spec,
        "n_frames": len(frames),
        **timing,
        "model_description": f"ScaleShiftMACE, hidden {hidden}, max_ell 2, "
        f"3 interactions, correlation 1, 5 A, {spec['dtype']}",
        "n_params": sum(p.numel() for p in model.parameters()),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "e3nn": e3nn.__version__,
            "mace": version,
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.stdin.read()))))
