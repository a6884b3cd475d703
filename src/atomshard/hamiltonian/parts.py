"""Distributed Hamiltonian output: per-rank block files merged by streaming.

Each rank writes the blocks it owns — every block of its atoms' block rows — to a part
file (HDF5, written atomically, :func:`write_part`). Rank 0 then merges the parts into

* one DeepH-style block file (:mod:`atomshard.hamiltonian.files` layout, blocks in the
  same ``(Rx, Ry, Rz, i, j)`` order as the serial
  :func:`~atomshard.models.hamiltonian.predict.write_prediction`), or
* the Γ-point CSR matrix of the serial :func:`~atomshard.models.hamiltonian.predict.write_csr`
  (``.npz``: ``data``, ``indices``, ``indptr``, ``shape``, ``species``,
  ``orbital_offsets``, ``units``),

without holding the matrix in one process: only the small per-block keys (five integers
per block) or per-row counts are read whole; matrix entries are copied in slabs of at
most ``slab`` blocks or atoms. Every part is sorted in the output's order, so a slab of
the output takes one contiguous range from each part. No communicator is needed: the
ranks meet only through the files.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse

from atomshard.errors import InputError
from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.hamiltonian.blocks import BlockSet
from atomshard.hamiltonian.files import write_blockset_group

__all__ = [
    "DEFAULT_SLAB",
    "merge_block_parts",
    "merge_csr_parts",
    "read_csr",
    "write_part",
]

#: blocks (block files) or atoms (CSR) copied per slab while merging
DEFAULT_SLAB = 65536


def _atomic_h5(path: Path) -> tuple[Path, h5py.File]:
    tmp = path.with_name(path.name + ".partial")
    return tmp, h5py.File(tmp, "w")


def _order_key(pairs: np.ndarray) -> np.ndarray:
    """Sort order of ``(Rx, Ry, Rz, i, j)`` rows, first column most significant."""
    return np.lexsort(pairs.T[::-1]) if len(pairs) else np.zeros(0, np.int64)


def write_part(
    path: str | Path,
    pairs: np.ndarray,
    blocks: Sequence[np.ndarray],
    owned: np.ndarray,
    basis: OrbitalBasis,
    species: np.ndarray,
) -> int:
    """Write one rank's blocks (global indices) for both merges; returns the block count.

    Args:
        pairs: ``[n, 5]`` int64 ``(Rx, Ry, Rz, i, j)`` of the blocks, any order, every
            ``i`` in ``owned``
        blocks: ``n`` arrays ``[n_orb(Z_i), n_orb(Z_j)]`` float64, eV
        owned: the rank's atoms (ascending), whose Γ-point rows the part holds
        species: ``[n_atoms]`` of the whole structure

    Datasets: ``atom_pairs`` ``[n, 5]``, ``chunk_shapes`` ``[n, 2]``, ``chunk_boundaries``
    ``[n+1]``, ``entries`` (sorted like the merged file); ``atoms`` (owned, ascending),
    and the rows of the owned atoms' Γ-point CSR slab: ``csr_indptr``, ``csr_indices``,
    ``csr_data``.
    """
    allp = np.asarray(pairs, dtype=np.int64).reshape(-1, 5)
    order = _order_key(allp)
    allp = allp[order]
    blocks = [blocks[k] for k in order.tolist()]
    shapes = np.array([b.shape for b in blocks], dtype=np.int64).reshape(-1, 2)
    bounds = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])]).astype(np.int64)
    entries = np.concatenate([b.reshape(-1) for b in blocks]) if blocks else np.zeros(0)

    # Γ-point rows of the owned atoms: H_Γ[i, :] = sum_R H(R)[i, :]
    offs = basis.offsets(species)
    owned = np.asarray(owned, dtype=np.int64)
    n_orb = offs[1:] - offs[:-1]
    local_off = np.concatenate([[0], np.cumsum(n_orb[owned])]).astype(np.int64)
    row_of_atom = np.full(len(species), -1, np.int64)
    row_of_atom[owned] = local_off[:-1]
    rows, cols, vals = [], [], []
    for (_, _, _, i, j), b in zip(allp.tolist(), blocks, strict=True):
        ni, nj = b.shape
        rows.append(np.repeat(np.arange(row_of_atom[i], row_of_atom[i] + ni), nj))
        cols.append(np.tile(np.arange(offs[j], offs[j] + nj), ni))
        vals.append(b.reshape(-1))
    n_rows, n_cols = int(local_off[-1]), int(offs[-1])
    coo = scipy.sparse.coo_matrix(
        (
            np.concatenate(vals) if vals else np.zeros(0),
            (
                np.concatenate(rows) if rows else np.zeros(0, np.int64),
                np.concatenate(cols) if cols else np.zeros(0, np.int64),
            ),
        ),
        shape=(n_rows, n_cols),
    )
    csr = coo.tocsr()
    csr.sum_duplicates()
    path = Path(path)
    tmp, f = _atomic_h5(path)
    with f:
        f.create_dataset("atom_pairs", data=allp)
        f.create_dataset("chunk_shapes", data=shapes)
        f.create_dataset("chunk_boundaries", data=bounds)
        f.create_dataset("entries", data=entries.astype(np.float64))
        f.create_dataset("atoms", data=owned.astype(np.int64))
        f.create_dataset("csr_indptr", data=csr.indptr.astype(np.int64))
        f.create_dataset("csr_indices", data=csr.indices.astype(np.int64))
        f.create_dataset("csr_data", data=csr.data.astype(np.float64))
    os.replace(tmp, path)
    return len(allp)


def _open_parts(paths: Sequence[str | Path]) -> list[h5py.File]:
    files: list[h5py.File] = []
    for p in paths:
        if not Path(p).is_file():
            for f in files:
                f.close()
            raise InputError(f"part file {str(p)!r} is missing (did every rank finish?)")
        files.append(h5py.File(p, "r"))
    return files


def _slabs(n: int, slab: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, max(int(slab), 1)):
        yield a, min(n, a + max(int(slab), 1))


def merge_block_parts(
    path: str | Path,
    parts: Sequence[str | Path],
    *,
    basis: OrbitalBasis,
    species: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    extra: dict[str, BlockSet] | None = None,
    slab: int = DEFAULT_SLAB,
) -> int:
    """Merge part files into one DeepH-style block file (group ``H``, then ``extra``).

    Returns the number of H blocks. The file equals :func:`write_prediction`'s for the
    same blocks (same datasets, attributes and block order).
    """
    path = Path(path)
    files = _open_parts(parts)
    try:
        keys = [np.asarray(f["atom_pairs"][()], dtype=np.int64).reshape(-1, 5) for f in files]
        shapes = [np.asarray(f["chunk_shapes"][()], dtype=np.int64).reshape(-1, 2) for f in files]
        bounds = [np.asarray(f["chunk_boundaries"][()], dtype=np.int64) for f in files]
        allk = np.concatenate(keys)
        src_part = np.concatenate([np.full(len(k), r, np.int64) for r, k in enumerate(keys)])
        src_pos = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys])
        order = _order_key(allk)
        if len(allk) > 1:
            sorted_keys = allk[order]
            if (np.diff(sorted_keys, axis=0) == 0).all(axis=1).any():
                raise InputError(f"{path}: two parts hold the same block (overlapping parts)")
        src_part, src_pos = src_part[order], src_pos[order]
        all_shapes = np.concatenate(shapes)[order] if len(order) else np.zeros((0, 2), np.int64)
        out_bounds = np.concatenate([[0], np.cumsum(all_shapes[:, 0] * all_shapes[:, 1])]).astype(
            np.int64
        )
        tmp, out = _atomic_h5(path)
        with out:
            out.create_dataset("species", data=np.asarray(species, dtype=np.int64))
            out.create_dataset("positions", data=np.asarray(positions, dtype=np.float64))
            out.create_dataset("cell", data=np.asarray(cell, dtype=np.float64))
            out.create_dataset("pbc", data=np.asarray(pbc, dtype=bool))
            out.attrs["basis"] = json.dumps({k: list(v) for k, v in basis.shells.items()})
            g = out.create_group("H")
            g.create_dataset("atom_pairs", data=allk[order])
            g.create_dataset("chunk_shapes", data=all_shapes)
            g.create_dataset("chunk_boundaries", data=out_bounds)
            entries = g.create_dataset("entries", shape=(int(out_bounds[-1]),), dtype=np.float64)
            for a, b in _slabs(len(order), slab):
                pieces = []
                for r, f in enumerate(files):
                    mine = np.flatnonzero(src_part[a:b] == r)
                    if not len(mine):
                        continue
                    lo, hi = int(src_pos[a + mine[0]]), int(src_pos[a + mine[-1]]) + 1
                    data = f["entries"][bounds[r][lo] : bounds[r][hi]]
                    base = bounds[r][lo]
                    for k, pos in zip(mine.tolist(), src_pos[a + mine].tolist(), strict=True):
                        pieces.append((k, data[bounds[r][pos] - base : bounds[r][pos + 1] - base]))
                pieces.sort(key=lambda t: t[0])
                if pieces:
                    entries[out_bounds[a] : out_bounds[b]] = np.concatenate([p for _, p in pieces])
            g.attrs["units"] = "eV"
            g.attrs["orbital_convention"] = "e3nn"
            for name, blocks in (extra or {}).items():
                blocks.check_basis(basis, where=f"{path}: {name}")
                units = "eV" if name.upper() == "H" else ""
                write_blockset_group(out.create_group(name), blocks, units)
        os.replace(tmp, path)
        return len(order)
    finally:
        for f in files:
            f.close()


class _NpyMember:
    """One ``.npy`` member of a zip written in pieces (shape and dtype known up front)."""

    def __init__(self, zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype: Any):
        self.handle = zf.open(name + ".npy", "w", force_zip64=True)
        self.dtype = np.dtype(dtype)
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": shape,
        }
        np.lib.format.write_array_header_2_0(self.handle, header)

    def write(self, values: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.handle.close()


def _small_member(zf: zipfile.ZipFile, name: str, value: np.ndarray) -> None:
    with zf.open(name + ".npy", "w", force_zip64=True) as handle:
        np.lib.format.write_array(handle, np.asanyarray(value), allow_pickle=False)


def _rows_of(atoms: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """Global orbital rows of ``atoms`` (in that order)."""
    counts = offs[atoms + 1] - offs[atoms]
    starts = np.repeat(offs[atoms], counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return (starts + within).astype(np.int64)


def merge_csr_parts(
    path: str | Path,
    parts: Sequence[str | Path],
    *,
    basis: OrbitalBasis,
    species: np.ndarray,
    slab: int = DEFAULT_SLAB,
) -> tuple[int, int]:
    """Merge the parts' Γ-point row slabs into the ``.npz`` of :func:`write_csr`.

    Returns ``(n_orbitals, nnz)``. Index arrays are int32 when they fit (as scipy's).
    """
    path = Path(path)
    species = np.asarray(species, dtype=np.int64)
    offs = basis.offsets(species)
    n_orb_atom = offs[1:] - offs[:-1]
    n, n_atoms = int(offs[-1]), len(species)
    files = _open_parts(parts)
    try:
        owner = np.full(n_atoms, -1, np.int64)
        pos_in_part = np.zeros(n_atoms, np.int64)
        indptrs = []
        for r, f in enumerate(files):
            atoms = np.asarray(f["atoms"][()], dtype=np.int64)
            if (owner[atoms] >= 0).any():
                raise InputError(f"{path}: an atom is owned by two parts")
            owner[atoms] = r
            pos_in_part[atoms] = np.arange(len(atoms))
            indptrs.append(np.asarray(f["csr_indptr"][()], dtype=np.int64))
        if (owner < 0).any():
            raise InputError(f"{path}: atom {int(np.flatnonzero(owner < 0)[0])} is in no part")
        atom_row_start = [
            np.concatenate([[0], np.cumsum(n_orb_atom[np.asarray(f["atoms"][()])])]) for f in files
        ]
        row_nnz = np.zeros(n, np.int64)
        for r in range(len(files)):
            row_nnz[_rows_of(np.flatnonzero(owner == r), offs)] = np.diff(indptrs[r])
        indptr = np.concatenate([[0], np.cumsum(row_nnz)]).astype(np.int64)
        nnz = int(indptr[-1])
        index_dtype = np.int32 if max(nnz, n) < np.iinfo(np.int32).max else np.int64
        tmp = path.with_name(path.name + ".partial")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for name, dset, dtype in (
                ("data", "csr_data", np.float64),
                ("indices", "csr_indices", index_dtype),
            ):
                member = _NpyMember(zf, name, (nnz,), dtype)
                for a, b in _slabs(n_atoms, slab):
                    pieces = []
                    for r, f in enumerate(files):
                        mine = np.flatnonzero(owner[a:b] == r) + a
                        if not len(mine):
                            continue
                        k = pos_in_part[mine]
                        ip, rs = indptrs[r], atom_row_start[r]
                        lo, hi = int(ip[rs[k[0]]]), int(ip[rs[k[-1] + 1]])
                        chunk = f[dset][lo:hi]
                        for atom, kk in zip(mine.tolist(), k.tolist(), strict=True):
                            s, e = int(ip[rs[kk]]) - lo, int(ip[rs[kk + 1]]) - lo
                            pieces.append((atom, chunk[s:e]))
                    pieces.sort(key=lambda t: t[0])
                    if pieces:
                        member.write(np.concatenate([p for _, p in pieces]))
                member.close()
            _small_member(zf, "indptr", indptr.astype(index_dtype))
            _small_member(zf, "shape", np.array([n, n]))
            _small_member(zf, "species", species)
            _small_member(zf, "orbital_offsets", offs)
            _small_member(zf, "units", np.array("eV"))
        os.replace(tmp, path)
        return n, nnz
    finally:
        for f in files:
            f.close()


def read_csr(path: str | Path) -> scipy.sparse.csr_matrix:
    """The CSR matrix of a ``.npz`` written by :func:`write_csr` or :func:`merge_csr_parts`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            shape = tuple(int(v) for v in z["shape"])
            return scipy.sparse.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not a CSR .npz written by atomshard ({exc})") from None
