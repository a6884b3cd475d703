"""A rank whose energy does not depend on the edge vectors still takes part in every
reverse exchange, so its peers do not wait for it forever.

A ``sitecustomize`` on PYTHONPATH detaches the message-passing model's per-atom energies
on rank 1 only (its forward exchanges still run, so rank 0 sends and receives as usual).
Before the fix, rank 1 skipped the backward pass and with it the per-layer reverse
exchanges rank 0 waits in. Now the run finishes, and every force is the gradient of rank
0's own energy: ``F = -d(sum of E_i over atoms rank 0 owns)/dx``, within 1e-10 eV/Å of
atomshard's serial evaluation of that partial sum (newton on and off).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomshard.graph import AtomicGraph
from atomshard.lammps.export import load_export
from atomshard.models.base import identity_exchange
from tests.lammps.lammps_cases import (
    Cell,
    case_input,
    cells,
    lammps_result,
    read_dump,
    run_lammps,
    thermo_blocks,
    write_data,
)

SITECUSTOMIZE = """
import dataclasses
import os

if os.environ.get("PMI_RANK") == "1":
    import atomshard.lammps.bridge as bridge

    class Detached:
        def __init__(self, model):
            self.model = model

        def atomic_energies(self, graph, edge_vec, exchange):
            return self.model.atomic_energies(graph, edge_vec, exchange).detach()

    load = bridge.load

    def detached(*args):
        handle = load(*args)
        return dataclasses.replace(handle, model=Detached(handle.model))

    bridge.load = detached
"""


def _split_box() -> Cell:
    """18 atoms across both halves of a 10 Å box split in x between 2 ranks: rank 0 owns
    x < 5 Å."""
    atoms = cells()["empty"].atoms.copy()  # atoms in 1 < x < 7 Å
    atoms.set_cell(np.diag([10.0, 8.0, 8.0]))
    return Cell(atoms, processors="2 1 1")


def _rank0_forces(model, atoms) -> tuple[float, np.ndarray]:
    """The full energy and the forces of the energy of rank 0's atoms alone."""
    graph = AtomicGraph.from_ase(atoms, float(model.cutoff))
    edge_vec = graph.edge_vectors().requires_grad_(True)
    energies = model.atomic_energies(graph, edge_vec, identity_exchange).to(torch.float64)
    rank0 = torch.from_numpy(atoms.positions[:, 0] < 5.0)
    (g,) = torch.autograd.grad(energies[rank0].sum(), edge_vec)
    forces = torch.zeros(len(atoms), 3, dtype=torch.float64)
    forces.index_add_(0, graph.dst, g).index_add_(0, graph.src, -g)
    return float(energies.detach().sum()), forces.numpy()


@pytest.mark.parametrize("newton", ["on", "off"])
def test_rank_with_detached_energy_does_not_hang(plugin, exports, tmp_path, monkeypatch, newton):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(inject))
    cell = _split_box()
    elements = ("O", "Si")
    data = tmp_path / "split.data"
    atoms = write_data(data, cell.atoms, elements)
    rank0 = atoms.positions[:, 0] < 5.0
    assert 0 < rank0.sum() < len(atoms)
    text = case_input(data, exports["nequip"], elements, cell)
    done = run_lammps(tmp_path, text, 2, newton=newton, timeout=120)  # a hang: TimeoutExpired
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (block,) = thermo_blocks((tmp_path / "log.lammps").read_text())
    got = lammps_result(block[0], read_dump(data.with_suffix(".dump")))
    energy, forces = _rank0_forces(load_export(exports["nequip"])[0], atoms)
    assert abs(got.energy - energy) <= 1e-10 * abs(energy)  # energies are not detached
    assert np.max(np.abs(got.forces - forces)) <= 1e-10
    assert np.max(np.abs(forces[~rank0])) > 1e-3  # rank 0's energy moves rank 1's atoms too
