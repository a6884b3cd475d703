"""pair_style atomshard == atomshard's own evaluation, inside LAMMPS's decomposition.

Small random models (NequIP-class with 3 message-passing layers, Allegro, a synthetic
Behler-Parrinello/n2p2 potential) on a triclinic cell thinner than twice the cutoff, a
2-atom cell shorter than the cutoff (ghosts of ghosts), a slab (boundary p p f) and a box
whose atoms leave some ranks' subdomains empty; on 1 and 2 MPI ranks (newton on and off),
on 4 (every model on the triclinic cell, the slab and the box with empty subdomains, and
the message-passing model on the 2-atom cell), and on 3 ranks with ``comm_style tiled``
and ``balance 1.0 rcb`` (the slab and the box: tiled communication refuses a cutoff
longer than a periodic box length, so not the two small cells). float64: energy and
virial within 1e-10 relative, forces and per-atom energies within 1e-10 eV/Å (eV);
float32 within float32 noise. Each configuration is one ``lmp`` run that evaluates its
cases (``clear`` between them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomshard.lammps.export import load_export
from tests.lammps.lammps_cases import (
    case_input,
    cells,
    lammps_result,
    read_dump,
    reference,
    rel,
    run_lammps,
    thermo_blocks,
    with_elements,
    write_data,
)

ELEMENTS = {
    "nequip": ("O", "Si"),
    "nequip32": ("O", "Si"),
    "allegro": ("O", "Si"),
    "bp": ("O", "H"),
}
CASES = [(m, c) for m in ("nequip", "allegro", "bp") for c in cells()] + [
    ("nequip32", "triclinic"),
    ("nequip32", "empty"),
]
#: (ranks, newton, comm_style) -> the cases it runs (newton off: the message-passing and
#: the BP model; 4 ranks: 36 atoms give every rank some, "empty" and "tiny" leave ranks
#: without; tiled on 3 ranks: uneven rcb cuts)
CONFIGS = {
    (1, "on", "brick"): CASES,
    (2, "on", "brick"): CASES,
    (2, "off", "brick"): [c for c in CASES if c[0] in ("nequip", "bp")],
    (4, "on", "brick"): [
        *((m, c) for m in ("nequip", "allegro", "bp") for c in ("triclinic", "slab", "empty")),
        ("nequip", "tiny"),
    ],
    (3, "on", "tiled"): [
        ("nequip", "slab"),
        ("nequip", "empty"),
        ("allegro", "slab"),
        ("bp", "slab"),
    ],
}
ONE = (1, "on", "brick")


@pytest.fixture(scope="module")
def cases(exports, tmp_path_factory):
    """Data files, the ``case_input`` arguments of every case and the float64
    references."""
    folder = tmp_path_factory.mktemp("parity")
    structures = cells()
    inputs, refs, models = {}, {}, {}
    for model_name, cell_name in CASES:
        elements = ELEMENTS[model_name]
        cell = structures[cell_name]
        data = folder / f"{model_name}-{cell_name}.data"
        atoms = write_data(data, with_elements(cell.atoms, elements), elements)
        inputs[model_name, cell_name] = (data, exports[model_name], elements, cell)
        ref_name = model_name.removesuffix("32")
        if ref_name not in models:
            models[ref_name] = load_export(exports[ref_name])[0]
        refs[model_name, cell_name] = reference(models[ref_name], atoms)
    return folder, inputs, refs


@pytest.fixture(scope="module")
def runs(plugin, cases):
    """{(ranks, newton, comm_style): {(model, cell): Result}}, one lmp run per
    configuration."""
    folder, inputs, _ = cases
    out = {}
    for (ranks, newton, comm), chosen in CONFIGS.items():
        text = "".join(case_input(*inputs[case], tiled=comm == "tiled") for case in chosen)
        done = run_lammps(folder, text, ranks, newton=newton)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        blocks = thermo_blocks((folder / "log.lammps").read_text())
        assert len(blocks) == len(chosen)
        out[ranks, newton, comm] = {  # the next configuration's dumps overwrite these
            case: lammps_result(block[0], read_dump(folder / f"{case[0]}-{case[1]}.dump"))
            for case, block in zip(chosen, blocks)
        }
    return out


@pytest.mark.parametrize(
    "config", list(CONFIGS), ids=[f"{r}ranks-newton{n}-{c}" for r, n, c in CONFIGS]
)
def test_lammps_equals_atomshard(runs, cases, config):
    refs = cases[2]
    for case, got in runs[config].items():
        want = refs[case]
        f32 = case[0].endswith("32")
        tol_e, tol_f = (1e-5, 1e-4) if f32 else (1e-10, 1e-10)
        where = f"{case} on {config}"
        assert abs(got.energy - want.energy) <= tol_e * abs(want.energy), where
        assert np.max(np.abs(got.forces - want.forces)) <= tol_f, where
        assert np.max(np.abs(got.energies - want.energies)) <= tol_f, where
        assert rel(got.virial, want.virial) <= (1e-4 if f32 else 1e-10), where


def test_per_atom_virial_sums_to_global_and_agrees_across_ranks(runs):
    one = runs[ONE]
    for config, results in runs.items():
        for case, got in results.items():
            assert got.per_atom_virial is not None
            total = got.per_atom_virial.sum(0)
            w = got.virial
            w6 = np.array([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])
            assert rel(total, w6) <= 1e-8, (case, config)
            tol = 1e-4 if case[0].endswith("32") else 1e-9
            assert rel(got.per_atom_virial, one[case].per_atom_virial) <= tol, (case, config)


def test_sevennet0_float64_on_2_ranks(plugin, tmp_path):
    """SevenNet-0 (5 layers, 5 Å) exported in float64 on 36 atoms of quartz, 2 ranks."""
    pytest.importorskip("sevenn")
    from atomshard.lammps.export import export_model

    model_file = tmp_path / "sevennet0.pt"
    export_model("sevennet-0", model_file, dtype=torch.float64)
    elements = ("O", "Si")
    cell = cells()["triclinic"]
    data = tmp_path / "quartz.data"
    atoms = write_data(data, cell.atoms, elements)
    done = run_lammps(tmp_path, case_input(data, model_file, elements, cell), 2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (block,) = thermo_blocks((tmp_path / "log.lammps").read_text())
    got = lammps_result(block[0], read_dump(data.with_suffix(".dump")))
    want = reference(load_export(model_file)[0], atoms)
    assert abs(got.energy - want.energy) <= 1e-10 * abs(want.energy)
    assert np.max(np.abs(got.forces - want.forces)) <= 1e-10
    assert rel(got.virial, want.virial) <= 1e-10
