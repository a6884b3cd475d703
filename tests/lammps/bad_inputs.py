"""Run LAMMPS inputs (mostly bad ones) in one process through the lammps module; print
one JSON line ``{case: the error message, or the potential energy of its last run}``.
Started by test_bad_input.py in a subprocess (with MPICH's libraries on
LD_LIBRARY_PATH), so MPI never starts inside pytest."""

from __future__ import annotations

import json
import sys

from atomshard.lammps.build import build_plugin
from lammps import lammps


def attempt(lines: list[str]) -> str | float | None:
    lmp = lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        for line in lines:
            lmp.command(line)
        return float(lmp.get_thermo("pe"))
    except Exception as exc:  # LAMMPS errors arrive as Exception("ERROR: ...")
        return str(exc)
    finally:
        lmp.close()


def main() -> None:
    data, model, not_export = sys.argv[1:4]
    plugin = build_plugin()
    head = ["units metal", "atom_style atomic", f"read_data {data}"]
    cases = {
        "not_export": [*head, "pair_style atomshard", f"pair_coeff * * {not_export} O Si"],
        "missing": [*head, "pair_style atomshard", f"pair_coeff * * {data}.nope O Si"],
        "not_element": [*head, "pair_style atomshard", f"pair_coeff * * {model} O Xx"],
        "unknown_element": [*head, "pair_style atomshard", f"pair_coeff * * {model} O C"],
        "type_without_element": [*head, "pair_style atomshard", f"pair_coeff * * {model} O"],
        "not_star": [*head, "pair_style atomshard", f"pair_coeff 1 2 {model} O Si"],
        "bad_dtype": [*head, "pair_style atomshard dtype float16"],
        "units_real": [
            "units real",
            "atom_style atomic",
            f"read_data {data}",
            "pair_style atomshard",
            f"pair_coeff * * {model} O Si",
            "run 0",
        ],
        "good": [*head, "pair_style atomshard", f"pair_coeff * * {model} O Si", "run 0"],
        "dtype_float32": [
            *head,
            "pair_style atomshard dtype float32",
            f"pair_coeff * * {model} O Si",
            "run 0",
        ],
    }
    out = {}
    for name, lines in cases.items():
        out[name] = attempt([f"plugin load {plugin}", *lines])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
