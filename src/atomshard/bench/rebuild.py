"""Rank side of ``benchmarks/bench_rebuild.py``: local vs gather neighbour-list rebuilds.

Every rank keeps one :class:`DistributedForceField` per rebuild mode on the same atoms.
Each round displaces every atom by a pseudo-random vector that depends only on its id and
the round (so both modes see the same positions whoever owns the atoms), then times one
rebuild per mode, modes interleaved. A last round repeats the rebuilds under
``tracemalloc`` to record each rank's peak of newly allocated (numpy/Python) memory.
No model is evaluated: rebuilds only read the cutoff.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import torch

from atomshard.comm import Communicator
from atomshard.graph import Structure
from atomshard.md import DistributedForceField, distributed_state
from atomshard.md.state import MDState


class _CutoffOnly:
    """Stands in for a potential: a rebuild reads only ``cutoff`` and ``check_species``."""

    needs_feature_exchange = True

    def __init__(self, cutoff: float) -> None:
        self.cutoff = float(cutoff)

    def check_species(self, species: torch.Tensor) -> None:
        return None


def _displace(state: MDState, round_: int, amplitude: float) -> None:
    ids = state.atom_ids.to(torch.float64)[:, None]
    phase = torch.tensor([12.9898, 78.233, 37.719], dtype=torch.float64)
    step = amplitude * torch.sin(ids * phase + 1.618 * (round_ + 1) * phase.flip(0))
    state.positions = state.positions + step


def time_rebuilds(
    comm: Communicator,
    *,
    structure: Structure | None = None,
    cutoff: float,
    skin: float,
    partition: str,
    modes: list[str],
    rounds: int,
    amplitude: float,
) -> dict[str, Any]:
    """Per-mode set-up and rebuild times (s), traced peak bytes and largest array rows."""
    full = None
    if comm.rank == 0:
        assert structure is not None
        n = structure.n_atoms
        f64 = torch.float64
        full = MDState(
            positions=torch.as_tensor(structure.positions, dtype=f64).clone(),
            velocities=torch.zeros(n, 3, dtype=f64),
            masses=torch.ones(n, dtype=f64),
            species=torch.as_tensor(structure.species, dtype=torch.int64),
            atom_ids=torch.arange(n, dtype=torch.int64),
            cell=torch.as_tensor(structure.cell, dtype=f64),
            pbc=torch.as_tensor(structure.pbc, dtype=torch.bool),
            forces=torch.zeros(n, 3, dtype=f64),
        )
    model: Any = _CutoffOnly(cutoff)
    fields: dict[str, DistributedForceField] = {}
    states = {}
    out: dict[str, Any] = {"rank": comm.rank}
    for mode in modes:
        ff = DistributedForceField(model, comm, skin=skin, partition=partition, rebuild=mode)
        state = distributed_state(full, comm)
        comm.barrier()
        t0 = time.perf_counter()
        ff.rebuild_plans(state)
        out[mode] = {"setup_s": time.perf_counter() - t0, "rebuild_s": [], "n_owned": []}
        fields[mode], states[mode] = ff, state
    full = None
    for r in range(rounds + 1):
        traced = r == rounds
        for mode in modes:
            _displace(states[mode], r, amplitude)
            comm.barrier()
            if traced:
                tracemalloc.start()
            t0 = time.perf_counter()
            fields[mode].rebuild_plans(states[mode])
            elapsed = time.perf_counter() - t0
            if traced:
                out[mode]["peak_traced_bytes"] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            else:
                out[mode]["rebuild_s"].append(elapsed)
            out[mode]["n_owned"].append(states[mode].n_atoms)
    for mode in modes:
        ff = fields[mode]
        out[mode]["peak_rows"] = ff.peak_rows
        out[mode]["local"] = ff.regions is not None
        out[mode]["n_migrated"] = ff.n_migrated
    return out
