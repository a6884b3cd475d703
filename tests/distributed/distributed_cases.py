"""Structures, partitions and rank-side helpers shared by the distributed tests."""

from __future__ import annotations

import ase
import numpy as np
import torch

from atomshard.comm import ExchangeProfiler
from atomshard.graph import AtomicGraph
from atomshard.io.structures import builtin_structure
from atomshard.models.base import compute_properties
from atomshard.runtime import DistributedCalculator, DistributedEvaluator, as_structure


def quartz(repeat=(2, 2, 2), seed: int = 0) -> ase.Atoms:
    atoms = builtin_structure("quartz", repeat)
    atoms.rattle(0.05, seed=seed)
    return atoms


def tiny_triclinic() -> ase.Atoms:
    """Two atoms in a cell shorter than the cutoff: each is its own neighbour via images."""
    cell = np.array([[2.6, 0.0, 0.0], [0.8, 2.5, 0.0], [0.5, 0.7, 2.7]])
    frac = [[0.1, 0.2, 0.1], [0.55, 0.4, 0.6]]
    return ase.Atoms("SiO", scaled_positions=frac, cell=cell, pbc=True)


def slab() -> ase.Atoms:
    atoms = quartz((2, 2, 1), seed=1)
    atoms.center(vacuum=6.0, axis=2)
    return atoms


def cluster() -> ase.Atoms:
    rng = np.random.default_rng(4)
    pos = rng.uniform(0, 5.0, (14, 3))
    keep = [0]
    for i in range(1, len(pos)):
        if np.min(np.linalg.norm(pos[keep] - pos[i], axis=1)) > 1.2:
            keep.append(i)
    return ase.Atoms(numbers=[14, 8] * 7, positions=pos)[keep]


STRUCTURES = {"quartz": quartz, "triclinic": tiny_triclinic, "slab": slab, "cluster": cluster}


def partitions(atoms: ase.Atoms, n_parts: int) -> dict[str, np.ndarray]:
    """Simple part vectors: slabs along x, random, and one with an empty part."""
    n = len(atoms)
    x = atoms.get_scaled_positions(wrap=True)[:, 0] if atoms.pbc.all() else atoms.positions[:, 0]
    order = np.argsort(x, kind="stable")
    slabs = np.empty(n, np.int64)
    slabs[order] = np.arange(n) * n_parts // n
    rand = np.random.default_rng(n_parts).integers(0, n_parts, n)
    empty = np.where(slabs == 1, 0, slabs)  # part 1 owns nothing
    return {"slabs": slabs, "random": rand, "empty": empty}


def serial(model, atoms: ase.Atoms) -> dict:
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    props = compute_properties(model, graph, forces=True, stress=bool(atoms.pbc.all()))
    return {
        "energy": float(props.energy),
        "energies": props.energies.numpy(),
        "forces": props.forces.numpy(),
        "stress": None if props.stress is None else props.stress.numpy(),
    }


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def run_cases(comm, model, *, cases, transport="auto"):
    """Rank side: evaluate each ``(name, atoms, part)`` case; energies from every rank."""
    model = build_model(model)
    n_cases = comm.broadcast_object(len(cases) if cases is not None else 0)
    out = []
    for i in range(n_cases):
        atoms, part = (cases[i][1], cases[i][2]) if comm.rank == 0 else (None, None)
        part = comm.broadcast_object(part)  # the partition spec is only read on rank 0
        ev = DistributedEvaluator(model, comm, partition=part, transport=transport)
        res = ev.evaluate(as_structure(atoms) if comm.rank == 0 else None)
        out.append((res.energy, res.stress, res.energies, res.forces))
    return out


def run_calculator(comm, model, atoms, part):
    """Rank side: the ASE calculator on every rank's copy of the same atoms."""
    calc = DistributedCalculator(model, comm=comm, partition=part)
    atoms = atoms.copy()
    atoms.calc = calc
    e1 = atoms.get_potential_energy()
    f1 = atoms.get_forces()
    s1 = atoms.get_stress()
    atoms.positions[0] += 0.03  # a second, different call
    e2 = atoms.get_potential_energy()
    return e1, f1, s1, e2, atoms.get_forces()


def fail_on(comm, bad_rank: int, how: str):
    """Rank side: ``bad_rank`` raises or dies while the others wait in a collective."""
    import os
    import time

    if comm.rank == bad_rank:
        if how == "raise":
            raise ValueError(f"deliberate failure on rank {comm.rank}")
        if how == "die":
            os._exit(3)
        time.sleep(4 * comm.timeout_s)  # "hang": stay silent past the timeout
    comm.barrier(what="waiting for the failed rank")
    comm.all_reduce_sum(torch.ones(3))
    return comm.rank


_MODELS: dict = {}


def build_model(kind):
    """A potential on the rank side: ``"nequip"`` (small, random, float64), ``"sevennet-0"``
    (converted weights, float64), or a ready :class:`Potential` passed through.

    Built once per process (e3nn compiles its tensor products on construction)."""
    if not isinstance(kind, str):
        return kind
    if kind not in _MODELS:
        _MODELS[kind] = _build(kind)
    return _MODELS[kind]


def random_nequip(cutoff: float = 3.5, n_layers: int = 3):
    """A seeded float64 NequIP-class model for O and Si whose readout and scales are
    random too (not the initial zeros and ones), so every term is exercised."""
    from atomshard.models.potential import NequIPConfig, NequIPPotential

    torch.manual_seed(0)
    config = NequIPConfig(
        species=(8, 14), channels=8, l_max=2, n_layers=n_layers, cutoff=cutoff, dtype="float64"
    )
    model = NequIPPotential(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, dtype=p.dtype))
    return model


def _build(kind: str):
    if kind == "nequip":
        return random_nequip()
    from atomshard.models.resolve import resolve_model

    return resolve_model(kind, dtype=torch.float64)


def x_slabs(structure, src, dst, shifts, n_parts):
    """Partition into slabs of the wrapped fractional x: atoms that cross a boundary
    during MD change owner at the next rebuild."""
    frac = np.linalg.solve(structure.cell.T, structure.positions.T).T[:, 0] % 1.0
    return np.minimum((frac * n_parts).astype(np.int64), n_parts - 1)


def run_profiled(comm, model, *, cases):
    """Rank side: evaluate each case; energies, stress, forces and the exchange calls."""
    model = build_model(model)
    n_cases = comm.broadcast_object(len(cases) if cases is not None else 0)
    out = []
    for i in range(n_cases):
        atoms, part = (cases[i][1], cases[i][2]) if comm.rank == 0 else (None, None)
        part = comm.broadcast_object(part)
        profiler = ExchangeProfiler()
        ev = DistributedEvaluator(model, comm, partition=part, profiler=profiler)
        res = ev.evaluate(as_structure(atoms) if comm.rank == 0 else None)
        calls = [(r.direction, r.width) for r in profiler.exchanges]
        out.append((res.energy, res.stress, res.energies, res.forces, calls))
    return out
