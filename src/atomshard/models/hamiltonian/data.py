"""Training samples for the Hamiltonian model: a graph plus reference blocks per element pair.

Targets are grouped exactly like :class:`~atomshard.models.hamiltonian.HamiltonianPrediction`
(node blocks by element, edge blocks by ``(Z_dst, Z_src)``, indices ascending), so a loss
compares tensors of equal shape. Edges whose block the reference lacks get a zero target
(the reference dropped it as negligible).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph, Structure
from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.hamiltonian.blocks import BlockSet, EdgeBlocks
from atomshard.hamiltonian.files import BlockFile, read_block_file, read_deeptb

__all__ = [
    "GraphBatch",
    "HamiltonianDataConfig",
    "Sample",
    "collate_samples",
    "expand_paths",
    "load_samples",
    "make_sample",
    "read_any",
]

Pair = tuple[int, int]
Grouped = dict[Pair, tuple[torch.Tensor, torch.Tensor]]


@dataclass(eq=False)
class Sample:
    """One structure: its graph, grouped reference H blocks, and the raw file.

    Attributes:
        node, edge: ``pair -> (indices [n], blocks [n, ni, nj] float64 eV)``
        uncovered_max: largest ``|H|`` of reference blocks no edge carries (beyond cutoff)
    """

    name: str
    graph: AtomicGraph
    node: Grouped
    edge: Grouped
    source: BlockFile
    uncovered_max: float


@dataclass(frozen=True, eq=False)
class GraphBatch(AtomicGraph):
    """A disjoint union of graphs of structures with different cells (one training step
    over several structures). Edge ``k`` belongs to structure ``edge_system[k]``, whose
    cell turns its integer ``shifts`` into an offset; ``cell`` is unused.

    Shapes:
        cells: ``[n_structures, 3, 3]`` float64 Å; edge_system: ``[n_edges]`` int64
    """

    cells: torch.Tensor
    edge_system: torch.Tensor

    def edge_vectors(self) -> torch.Tensor:
        """``positions[src] + shifts @ cells[edge_system] - positions[dst]``, per edge."""
        cell = self.cells.index_select(0, self.edge_system)
        offsets = torch.einsum("ea,eab->eb", self.shifts.to(self.positions.dtype), cell)
        return (
            self.positions.index_select(0, self.src)
            + offsets
            - self.positions.index_select(0, self.dst)
        )


def collate_samples(samples: Sequence[Sample]) -> Sample:
    """Several samples as one (a :class:`GraphBatch` and targets re-indexed into it).

    The model's output on the batch equals its outputs on the parts (message passing
    never crosses structures), so one optimisation step can cover several structures.
    """
    if not samples:
        raise InputError("collate_samples needs at least one sample")
    if len(samples) == 1:
        return samples[0]
    atoms = edges = 0
    node: dict[Pair, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    edge: dict[Pair, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    src, dst, system = [], [], []
    for k, s in enumerate(samples):
        g = s.graph
        for key, (idx, blocks) in s.node.items():
            node.setdefault(key, []).append((idx + atoms, blocks))
        for key, (idx, blocks) in s.edge.items():
            edge.setdefault(key, []).append((idx + edges, blocks))
        src.append(g.src + atoms)
        dst.append(g.dst + atoms)
        system.append(torch.full((g.n_edges,), k, dtype=torch.int64, device=g.device))
        atoms += g.n_atoms
        edges += g.n_edges
    first = samples[0].graph
    graph = GraphBatch(
        positions=torch.cat([s.graph.positions for s in samples]),
        species=torch.cat([s.graph.species for s in samples]),
        cell=torch.zeros_like(first.cell),
        pbc=torch.zeros_like(first.pbc),
        src=torch.cat(src),
        dst=torch.cat(dst),
        shifts=torch.cat([s.graph.shifts for s in samples]),
        cutoff=first.cutoff,
        cells=torch.stack([s.graph.cell for s in samples]),
        edge_system=torch.cat(system),
    )

    def join(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    return Sample(
        name="+".join(s.name for s in samples),
        graph=graph,
        node={k: join(v) for k, v in sorted(node.items())},
        edge={k: join(v) for k, v in sorted(edge.items())},
        source=samples[0].source,
        uncovered_max=max(s.uncovered_max for s in samples),
    )


def expand_paths(spec: str | Sequence[str]) -> list[Path]:
    """Block files / DeePTB folders from a path, a glob, a folder of ``*.h5`` or a list."""
    items = [spec] if isinstance(spec, str) else list(spec)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir() and (p / "hamiltonians.h5").exists():
            out.append(p)
        elif p.is_dir():
            found = sorted(p.glob("*.h5"))
            if not found:
                raise InputError(f"folder {item!r} holds no .h5 block files")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            found = sorted(Path(x) for x in glob.glob(str(item)))
            if not found:
                raise InputError(f"no data matches {item!r}")
            out += found
    return out


def read_any(path: Path) -> BlockFile:
    """A DeePTB folder, a PySCF ``.npz`` (molecules) or one of our block files."""
    if path.is_dir():
        return read_deeptb(path)
    if path.suffix == ".npz":
        from atomshard.hamiltonian.pyscf_data import read_pyscf_npz

        return read_pyscf_npz(path)
    return read_block_file(path)


def _group(
    graph: AtomicGraph,
    node: Sequence[np.ndarray],
    edge: Sequence[np.ndarray],
    elements: Sequence[int],
) -> tuple[Grouped, Grouped]:
    species = graph.species
    zd, zs = species[graph.dst], species[graph.src]
    gn: Grouped = {}
    ge: Grouped = {}
    for z in elements:
        idx = torch.nonzero(species == z).flatten()
        if len(idx):
            gn[(z, z)] = (idx, torch.as_tensor(np.stack([node[i] for i in idx.tolist()])))
    for a in elements:
        for b in elements:
            idx = torch.nonzero((zd == a) & (zs == b)).flatten()
            if len(idx):
                ge[(a, b)] = (idx, torch.as_tensor(np.stack([edge[k] for k in idx.tolist()])))
    return gn, ge


def make_sample(
    name: str,
    source: BlockFile,
    basis: OrbitalBasis,
    cutoff: float,
    *,
    matrix: str = "H",
    required: bool = True,
) -> Sample:
    """Graph at ``cutoff`` with the file's ``matrix`` blocks put on its nodes and edges.

    Without that matrix (and ``required=False``) the sample has no targets.
    """
    if matrix not in source.matrices and required:
        raise InputError(f"{name}: has no {matrix!r} blocks (has {list(source.matrices)})")
    if source.basis != basis:
        raise InputError(
            f"{name}: its orbital basis {dict(source.basis.shells)} differs from "
            f"the model's {dict(basis.shells)}"
        )
    st = Structure(
        positions=source.positions, species=source.species, cell=source.cell, pbc=source.pbc
    )
    graph = AtomicGraph.from_structure(st, cutoff)
    if matrix not in source.matrices:
        return Sample(name, graph, {}, {}, source, 0.0)
    eb = EdgeBlocks.from_blocks(
        source.matrices[matrix], basis, graph.src.numpy(), graph.dst.numpy(), graph.shifts.numpy()
    )
    node, edge = _group(graph, eb.node, eb.edge, basis.elements)
    return Sample(name, graph, node, edge, source, eb.uncovered_max)


def load_samples(
    paths: Sequence[Path], basis: OrbitalBasis | None, cutoff: float
) -> tuple[list[Sample], OrbitalBasis]:
    """Read files and build samples; the basis defaults to the first file's."""
    samples = []
    for p in paths:
        src = read_any(p)
        basis = basis or src.basis
        samples.append(make_sample(str(p), src, basis, cutoff))
    if basis is None:
        raise InputError("no training data given")
    return samples, basis


def blockset_of(sample: Sample) -> BlockSet:
    """The reference H of a sample."""
    return sample.source.matrices["H"]


@dataclass(frozen=True, kw_only=True)
class HamiltonianDataConfig:
    """Where the training data are.

    Attributes:
        train: block files, folders of them, globs or DeePTB folders
        valid: the same for validation; when empty, ``valid_fraction`` of ``train``
            (at least one structure when there are two or more) is held out
        seed: which structures are held out
    """

    train: tuple[str, ...] | str = ()
    valid: tuple[str, ...] | str = ()
    valid_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.train:
            raise InputError("data.train must name training files")
        if not 0 <= self.valid_fraction < 1:
            raise InputError(f"data.valid_fraction must be in [0, 1), got {self.valid_fraction!r}")

    def split(self) -> tuple[list[Path], list[Path]]:
        """Training and validation paths."""
        train = expand_paths(self.train)
        if self.valid:
            return train, expand_paths(self.valid)
        n_val = round(self.valid_fraction * len(train))
        if self.valid_fraction > 0 and len(train) >= 2:
            n_val = max(n_val, 1)
        order = np.random.default_rng(self.seed).permutation(len(train))
        val = sorted(int(i) for i in order[:n_val])
        return [p for i, p in enumerate(train) if i not in val], [train[i] for i in val]
