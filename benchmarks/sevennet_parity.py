"""SevenNet parity figures: our converted checkpoint vs sevenn's model, float64 and float32.

For each parity structure (quartz, amorphous-like SiO2, HfO2, quartz slab, small
triclinic cell) prints the largest deviations of energy per atom (eV), per-atom
energies (eV), forces (eV/Å) and stress (eV/Å³) for:

* ``ours64 vs sevenn64`` — both in float64 (the parity the tests hold);
* ``ours32 vs sevenn32`` — our float32 body vs sevenn's calculator as shipped;
* ``ours32 vs sevenn64`` and ``sevenn32 vs sevenn64`` — each float32 path's own error.

Writes ``<out>/sevennet_parity.json``.

    python benchmarks/sevennet_parity.py --model SevenNet-0 --out bench_out/parity
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def _diff(a, b, n_atoms: int) -> dict:
    stress = (
        float(np.abs(a.stress - b.stress).max())
        if a.stress is not None and b.stress is not None
        else None
    )
    return {
        "energy_per_atom": abs(a.energy - b.energy) / n_atoms,
        "energies": float(np.abs(a.energies - b.energies).max()),
        "forces": float(np.abs(a.forces - b.forces).max()),
        "stress": stress,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="SevenNet-0", help="SevenNet name or checkpoint")
    parser.add_argument("--out", type=Path, default=Path("bench_out/parity"))
    args = parser.parse_args(argv)

    import torch

    from atomshard.models.checkpoint import load_model
    from atomshard.models.potential.sevennet import (
        convert_sevennet_checkpoint,
        find_sevennet_checkpoint,
    )
    from atomshard.testing import evaluate
    from atomshard.testing.sevennet_reference import SevenNetReference, parity_structures

    source = find_sevennet_checkpoint(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        target = convert_sevennet_checkpoint(source, Path(tmp) / "model.pt")
        ours = {dt: load_model(target, dtype=dt) for dt in (torch.float32, torch.float64)}
    ref64 = SevenNetReference(source, dtype=torch.float64)
    ref32 = SevenNetReference(source, dtype=torch.float32)
    report: dict = {"model": str(source), "structures": {}}
    print(
        f"{'structure':16s} {'comparison':20s} {'dE/atom':>9s} {'dE_i':>9s} {'dF':>9s} {'dS':>9s}"
    )
    for name, atoms in parity_structures().items():
        n = len(atoms)
        r64, r32 = ref64(atoms), ref32(atoms)
        o64, o32 = evaluate(ours[torch.float64], atoms), evaluate(ours[torch.float32], atoms)
        rows = {
            "ours64 vs sevenn64": _diff(o64, r64, n),
            "ours32 vs sevenn32": _diff(o32, r32, n),
            "ours32 vs sevenn64": _diff(o32, r64, n),
            "sevenn32 vs sevenn64": _diff(r32, r64, n),
        }
        report["structures"][name] = {"n_atoms": n, "pbc": atoms.pbc.tolist(), **rows}
        for label, d in rows.items():
            s = "-" if d["stress"] is None else f"{d['stress']:.1e}"
            print(
                f"{name:16s} {label:20s} {d['energy_per_atom']:9.1e} {d['energies']:9.1e} "
                f"{d['forces']:9.1e} {s:>9s}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sevennet_parity.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'sevennet_parity.json'}")
    return report


if __name__ == "__main__":
    main()
