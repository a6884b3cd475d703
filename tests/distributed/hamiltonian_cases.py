"""Model, structures and rank-side helpers of the distributed Hamiltonian tests."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from atomshard.graph import AtomicGraph, Structure
from atomshard.hamiltonian.blocks import BlockSet, EdgeBlocks
from atomshard.hamiltonian.files import BlockFile
from atomshard.models.hamiltonian import HamiltonianConfig, HamiltonianModel
from atomshard.models.hamiltonian.data import Sample, _group
from atomshard.runtime.hamiltonian import predict_part, split_hamiltonian
from atomshard.train.hamiltonian import TrainingConfig
from atomshard.train.hamiltonian_distributed import distributed_gradients
from tests.distributed.distributed_cases import quartz, tiny_triclinic

BASIS = {"Si": "1s1p", "O": "1s1p"}


def config(**kw) -> HamiltonianConfig:
    settings = {"cutoff": 3.6, "channels": 4, "hidden": 6, "n_layers": 3, "dtype": "float64"}
    settings.update(kw)
    return HamiltonianConfig(basis=BASIS, **settings)


def model(cfg: HamiltonianConfig | None = None, seed: int = 0) -> HamiltonianModel:
    torch.manual_seed(seed)
    return HamiltonianModel(cfg or config())


def structures() -> dict[str, Atoms]:
    cluster = quartz((1, 1, 1), seed=3)
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    return {"quartz": quartz((2, 1, 1)), "triclinic": tiny_triclinic(), "cluster": cluster}


def synthetic_sample(atoms: Atoms, cfg: HamiltonianConfig, seed: int = 1) -> Sample:
    """A sample whose 'reference' H is a random Hermitian-by-construction block set."""
    basis = cfg.orbital_basis
    st = Structure.from_ase(atoms)
    graph = AtomicGraph.from_structure(st, cfg.cutoff)
    rng = np.random.default_rng(seed)
    n_orb = {z: basis.n_orbitals(z) for z in set(atoms.numbers.tolist())}
    src, dst, sh = graph.src.numpy(), graph.dst.numpy(), graph.shifts.numpy()
    blocks: dict[tuple[int, ...], np.ndarray] = {}
    for i, z in enumerate(atoms.numbers.tolist()):
        a = rng.normal(size=(n_orb[z], n_orb[z]))
        blocks[(0, 0, 0, i, i)] = a + a.T
    for k in range(len(src)):
        key = (*sh[k].tolist(), int(dst[k]), int(src[k]))
        rkey = (*(-sh[k]).tolist(), int(src[k]), int(dst[k]))
        if key in blocks:
            continue
        b = rng.normal(size=(n_orb[int(atoms.numbers[dst[k]])], n_orb[int(atoms.numbers[src[k]])]))
        b *= np.exp(-np.linalg.norm(graph.edge_vectors()[k].numpy()))
        blocks[key] = b
        blocks[rkey] = b.T
    keys = sorted(blocks)
    bs = BlockSet(
        species=st.species, atom_pairs=np.array(keys), blocks=tuple(blocks[k] for k in keys)
    )
    source = BlockFile(
        basis=basis,
        species=st.species,
        positions=st.positions,
        cell=st.cell,
        pbc=st.pbc,
        matrices={"H": bs},
    )
    eb = EdgeBlocks.from_blocks(bs, basis, src, dst, sh)
    node, edge = _group(graph, eb.node, eb.edge, basis.elements)
    return Sample("synthetic", graph, node, edge, source, eb.uncovered_max)


def blocks_by_pair(bs: BlockSet) -> dict[tuple[int, ...], np.ndarray]:
    return {tuple(r): b for r, b in zip(bs.atom_pairs.tolist(), bs.blocks, strict=True)}


def _make(cfg, state):
    m = HamiltonianModel(cfg)
    m.load_state_dict(state)
    return m


def rank_predict(comm, cfg, state, *, cases):
    """Rank side: owned blocks of each ``(atoms, partition)`` case as ``{pair: block}``."""
    from atomshard.comm import HaloExchange

    m = _make(cfg, state)
    n = comm.broadcast_object(len(cases) if cases is not None else 0)
    out = []
    for c in range(n):
        parts = None
        if comm.rank == 0:
            atoms, spec = cases[c]
            parts = split_hamiltonian(Structure.from_ase(atoms), cfg.cutoff, comm.world_size, spec)
        part = comm.scatter_objects(parts)
        with torch.no_grad():
            pred = predict_part(m, part, HaloExchange(part.plan, comm))
        node_pairs, edge_pairs = part.owned_pairs()
        got = {}
        for table, pairs in ((pred.node, node_pairs), (pred.edge, edge_pairs)):
            for idx, b in table.values():
                for k, blk in zip(idx.tolist(), b.numpy(), strict=True):
                    got[tuple(pairs[k].tolist())] = blk
        out.append((part.plan.n_owned, got))
    return out


def rank_gradients(comm, cfg, state, tcfg, spec, *, sample):
    """Rank side: the all-reduced gradients of the distributed loss."""
    m = _make(cfg, state)
    parts = None
    if comm.rank == 0:
        st = sample.graph.structure()
        parts = split_hamiltonian(st, cfg.cutoff, comm.world_size, spec, sample=sample)
    part = comm.scatter_objects(parts)
    loss = distributed_gradients(comm, m, part, tcfg)
    return loss, {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


def training_config(epochs: int = 3) -> TrainingConfig:
    return TrainingConfig(epochs=epochs, lr=5e-3, ema_decay=0.9, plateau_patience=0)
