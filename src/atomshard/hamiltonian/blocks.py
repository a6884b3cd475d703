"""Real-space orbital blocks ``H_ij(R) = <i, 0|H|j, R>`` and their mapping onto graph edges.

A :class:`BlockSet` holds the blocks of one matrix (Hamiltonian or overlap) of one
structure, all in our orbital convention (:mod:`atomshard.hamiltonian.basis`), keyed by
``atom_pairs`` rows ``(Rx, Ry, Rz, i, j)`` with 0-based atoms and integer lattice
translations ``R``: the block couples the orbitals of atom ``i`` in the home cell (rows)
with those of atom ``j`` in cell ``R`` (columns).

**Edges carry blocks of their destination's rows.** Edge ``k = src -> dst`` with image
shift ``s_k`` (``r_k = pos[src] + s_k @ cell - pos[dst]``) carries
``H_{dst, src}(s_k)``, shape ``[n_orb(Z_dst), n_orb(Z_src)]``. The owner of an edge is
its destination, so a rank owning atoms also owns their block rows of ``H``. The reverse
edge carries the transpose (``H_ji(-R) = H_ij(R)^T``); node ``i`` carries ``H_ii(0)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from atomshard.errors import InputError
from atomshard.hamiltonian.basis import OrbitalBasis

__all__ = ["BlockSet", "EdgeBlocks", "tile_blockset"]


@dataclass(frozen=True, eq=False)
class BlockSet:
    """The real-space blocks of one matrix of one structure (our orbital convention).

    Shapes:
        species: ``[n_atoms]`` int64 atomic numbers
        atom_pairs: ``[n_blocks, 5]`` int64, ``(Rx, Ry, Rz, i, j)``
        blocks: ``n_blocks`` arrays ``[n_orb(Z_i), n_orb(Z_j)]`` float64 (eV for H)
    """

    species: np.ndarray
    atom_pairs: np.ndarray
    blocks: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        pairs = np.asarray(self.atom_pairs, dtype=np.int64).reshape(-1, 5)
        object.__setattr__(self, "atom_pairs", pairs)
        object.__setattr__(self, "species", np.asarray(self.species, dtype=np.int64))
        if len(self.blocks) != len(pairs):
            raise InputError(f"{len(pairs)} atom pairs but {len(self.blocks)} blocks")
        n = len(self.species)
        bad = (pairs[:, 3] < 0) | (pairs[:, 3] >= n) | (pairs[:, 4] < 0) | (pairs[:, 4] >= n)
        if bad.any():
            k = int(np.nonzero(bad)[0][0])
            raise InputError(f"block {k} {pairs[k].tolist()} names an atom outside 0..{n - 1}")

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def check_basis(self, basis: OrbitalBasis, *, where: str = "blocks") -> None:
        """Raise :class:`InputError` for an element without basis or a mis-shaped block."""
        basis.check_species(self.species, name=where)
        for k, (row, b) in enumerate(zip(self.atom_pairs, self.blocks, strict=True)):
            zi, zj = int(self.species[row[3]]), int(self.species[row[4]])
            basis.check_block_shape(b, zi, zj, where=f"{where}: block {k} {row.tolist()}")

    def index(self) -> dict[tuple[int, int, int, int, int], int]:
        """``(Rx, Ry, Rz, i, j) -> block number``."""
        return {tuple(int(v) for v in row): k for k, row in enumerate(self.atom_pairs)}  # type: ignore[misc]

    def max_hermiticity_error(self) -> float:
        """``max |H_ij(R) - H_ji(-R)^T|`` over pairs whose partner is present."""
        idx = self.index()
        worst = 0.0
        for k, (rx, ry, rz, i, j) in enumerate(self.atom_pairs.tolist()):
            p = idx.get((-rx, -ry, -rz, j, i))
            if p is not None:
                worst = max(worst, float(np.abs(self.blocks[k] - self.blocks[p].T).max()))
        return worst

    def convert(self, basis: OrbitalBasis, convention: str) -> BlockSet:
        """The same blocks converted from ``convention`` into ours."""
        self.check_basis(basis)
        qs = {int(z): basis.transform(int(z), convention) for z in np.unique(self.species)}
        out = []
        for (_, _, _, i, j), b in zip(self.atom_pairs.tolist(), self.blocks, strict=True):
            out.append(qs[int(self.species[i])] @ b @ qs[int(self.species[j])].T)
        return BlockSet(species=self.species, atom_pairs=self.atom_pairs, blocks=tuple(out))

    @classmethod
    def from_dense(
        cls,
        matrix: np.ndarray,
        species: np.ndarray,
        basis: OrbitalBasis,
        *,
        threshold: float = 0.0,
    ) -> BlockSet:
        """All ``R = 0`` blocks of a molecule's full matrix (ours convention) above threshold.

        Shapes:
            matrix: ``[n_orb, n_orb]``
        """
        offs = basis.offsets(species)
        if matrix.shape != (offs[-1], offs[-1]):
            raise InputError(
                f"matrix of shape {matrix.shape} does not match the basis ({offs[-1]} orbitals)"
            )
        pairs, blocks = [], []
        n = len(species)
        for i in range(n):
            for j in range(n):
                b = np.array(matrix[offs[i] : offs[i + 1], offs[j] : offs[j + 1]], dtype=float)
                if i == j or np.abs(b).max() > threshold:
                    pairs.append((0, 0, 0, i, j))
                    blocks.append(b)
        return cls(species=np.asarray(species), atom_pairs=np.array(pairs), blocks=tuple(blocks))


@dataclass(frozen=True, eq=False)
class EdgeBlocks:
    """Blocks aligned with a graph: one per node (``H_ii(0)``) and one per edge.

    Attributes:
        node: ``n_atoms`` arrays ``[n_orb(Z_i), n_orb(Z_i)]`` (zeros where absent)
        edge: ``n_edges`` arrays ``[n_orb(Z_dst), n_orb(Z_src)]`` (zeros where absent)
        edge_present: ``[n_edges]`` bool, whether the set had the edge's block
        uncovered: number of blocks of the set that no edge or node carries
        uncovered_max: largest ``|element|`` among those (what the cutoff misses)
    """

    node: tuple[np.ndarray, ...]
    edge: tuple[np.ndarray, ...]
    edge_present: np.ndarray
    uncovered: int
    uncovered_max: float

    @classmethod
    def from_blocks(
        cls,
        blockset: BlockSet,
        basis: OrbitalBasis,
        src: np.ndarray,
        dst: np.ndarray,
        shifts: np.ndarray,
    ) -> EdgeBlocks:
        """Put ``H_{dst,src}(shift)`` on every edge and ``H_ii(0)`` on every node.

        Shapes:
            src, dst: ``[n_edges]`` int64; shifts: ``[n_edges, 3]`` int64
        """
        blockset.check_basis(basis)
        idx = blockset.index()
        used = np.zeros(blockset.n_blocks, dtype=bool)
        sp = blockset.species
        node = []
        for i, z in enumerate(sp.tolist()):
            k = idx.get((0, 0, 0, i, i))
            n = basis.n_orbitals(z)
            node.append(blockset.blocks[k] if k is not None else np.zeros((n, n)))
            if k is not None:
                used[k] = True
        edge, present = [], np.zeros(len(src), dtype=bool)
        for e, (s, d, sh) in enumerate(
            zip(src.tolist(), dst.tolist(), shifts.tolist(), strict=True)
        ):
            k = idx.get((sh[0], sh[1], sh[2], d, s))
            if k is None:
                edge.append(np.zeros((basis.n_orbitals(sp[d]), basis.n_orbitals(sp[s]))))
            else:
                edge.append(blockset.blocks[k])
                present[e] = True
                used[k] = True
        missed = [
            float(np.abs(b).max()) for b, u in zip(blockset.blocks, used, strict=True) if not u
        ]
        return cls(tuple(node), tuple(edge), present, len(missed), max(missed, default=0.0))


def tile_blockset(blocks: BlockSet, repeat: Sequence[int]) -> BlockSet:
    """The blocks of a crystal's ``a x b x c`` supercell (atoms in ASE's ``repeat`` order).

    Block ``(R, i, j)`` couples atom ``i`` of cell 0 with atom ``j`` of cell ``R``; in the
    supercell, atom ``i`` of tile ``t`` couples with atom ``j`` of tile ``(t + R) mod reps``
    in supercell ``floor((t + R) / reps)``.
    """
    reps = np.asarray(repeat, dtype=np.int64).reshape(3)
    n = len(blocks.species)
    tiles = np.array(
        [(a, b, c) for a in range(reps[0]) for b in range(reps[1]) for c in range(reps[2])],
        dtype=np.int64,
    )
    n_tiles = len(tiles)
    pairs = blocks.atom_pairs
    shift = pairs[:, None, :3] + tiles[None, :, :]  # [n_blocks, n_tiles, 3] primitive cells
    target = np.mod(shift, reps)
    new_shift = np.floor_divide(shift, reps)
    tile_of = lambda t: (t[..., 0] * reps[1] + t[..., 1]) * reps[2] + t[..., 2]  # noqa: E731
    rows = tile_of(np.broadcast_to(tiles, shift.shape)) * n + pairs[:, None, 3]
    cols = tile_of(target) * n + pairs[:, None, 4]
    out = np.concatenate([new_shift, rows[..., None], cols[..., None]], axis=2).reshape(-1, 5)
    order = np.lexsort(out.T[::-1]) if len(out) else np.zeros(0, np.int64)
    source_block = np.repeat(np.arange(len(pairs)), n_tiles)[order]
    return BlockSet(
        species=np.tile(blocks.species, n_tiles),
        atom_pairs=out[order],
        blocks=tuple(blocks.blocks[k] for k in source_block.tolist()),
    )
