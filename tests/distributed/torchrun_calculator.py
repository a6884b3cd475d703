"""Run by ``test_torchrun.py`` under torchrun: the ASE calculator from environment variables."""

from __future__ import annotations

import json
import sys

import numpy as np

from atomshard.runtime import DistributedCalculator
from tests.distributed.distributed_cases import build_model, quartz, serial


def main(out_prefix: str) -> None:
    model = build_model("nequip")
    atoms = quartz((2, 1, 1))
    calc = DistributedCalculator(model, partition="lownn")  # init_communicator() from env
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    ref = serial(model, atoms)
    result = {
        "rank": calc.comm.rank,
        "world_size": calc.comm.world_size,
        "energy": energy,
        "energy_error": abs(energy - ref["energy"]) / abs(ref["energy"]),
        "force_error": float(np.abs(forces - ref["forces"]).max() / np.abs(ref["forces"]).max()),
    }
    with open(f"{out_prefix}.{calc.comm.rank}.json", "w") as handle:
        json.dump(result, handle)
    calc.comm.close()


if __name__ == "__main__":
    main(sys.argv[1])
