"""Distributed Hamiltonian output: merged block file / CSR == serial, shift-invert, CLI."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.linalg
import torch

from atomshard.cli import main
from atomshard.comm import NullCommunicator
from atomshard.commands.predict_parallel import PredictOptions, predict_rank
from atomshard.errors import InputError
from atomshard.hamiltonian.assembly import BlochAssembler, eigenvalues_near
from atomshard.hamiltonian.blocks import BlockSet, tile_blockset
from atomshard.hamiltonian.files import BlockFile, read_block_file, write_block_file
from atomshard.hamiltonian.parts import read_csr
from atomshard.models.checkpoint import save_checkpoint
from atomshard.models.hamiltonian.data import make_sample
from atomshard.models.hamiltonian.predict import write_csr, write_prediction
from tests.distributed.distributed_cases import quartz
from tests.distributed.hamiltonian_cases import (
    config,
    model,
    synthetic_sample,
)

pytestmark = pytest.mark.distributed
TOL = 1e-10


def _with_overlap(source: BlockFile, seed: int = 2) -> BlockFile:
    """``source`` plus a positive-definite overlap (identity + small symmetric couplings)."""
    h = source.matrices["H"]
    rng = np.random.default_rng(seed)
    blocks: dict[tuple[int, ...], np.ndarray] = {}
    for row, b in zip(h.atom_pairs.tolist(), h.blocks, strict=True):
        key = tuple(row)
        rx, ry, rz, i, j = key
        rkey = (-rx, -ry, -rz, j, i)
        if key in blocks:
            continue
        if key == rkey:
            blocks[key] = np.eye(b.shape[0])
        else:
            s = 0.01 * rng.normal(size=b.shape)
            blocks[key], blocks[rkey] = s, s.T
    keys = [tuple(r) for r in h.atom_pairs.tolist()]
    s_set = BlockSet(
        species=h.species, atom_pairs=h.atom_pairs, blocks=tuple(blocks[k] for k in keys)
    )
    return BlockFile(
        basis=source.basis,
        species=source.species,
        positions=source.positions,
        cell=source.cell,
        pbc=source.pbc,
        matrices={"H": h, "S": s_set},
    )


def _same_h5(a: Path, b: Path) -> None:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert dict(fa.attrs) == dict(fb.attrs)
        names: list[str] = []
        fa.visit(names.append)
        other: list[str] = []
        fb.visit(other.append)
        assert names == other
        assert {"H/entries", "S/entries", "positions"} <= set(names)
        for name in names:
            if isinstance(fa[name], h5py.Group):
                assert dict(fa[name].attrs) == dict(fb[name].attrs), name
                continue
            x, y = fa[name][()], fb[name][()]
            assert x.dtype == y.dtype and x.shape == y.shape, name
            if x.dtype.kind == "f":
                assert np.abs(x - y).max(initial=0) <= TOL * max(np.abs(y).max(initial=0), 1)
            else:
                assert np.array_equal(x, y), name


def _same_npz(a: Path, b: Path) -> None:
    with np.load(a) as za, np.load(b) as zb:
        assert sorted(za.files) == sorted(zb.files)
        for k in za.files:
            x, y = za[k], zb[k]
            assert x.dtype == y.dtype and x.shape == y.shape, k
            if k == "data":
                assert np.abs(x - y).max(initial=0) <= TOL * np.abs(y).max(initial=1)
            else:
                assert np.array_equal(x, y), k


def test_merged_outputs_equal_serial_files(hamiltonian_groups, tmp_path):
    cfg = config()
    m = model(cfg)
    sample = synthetic_sample(quartz((2, 1, 1)), cfg)
    source = _with_overlap(sample.source)
    sample = make_sample("q", source, m.basis, m.cutoff)
    with torch.no_grad():
        pred = m(sample.graph)
    blocks = write_prediction(tmp_path / "serial.h5", m, sample, pred)
    write_csr(tmp_path / "serial.npz", blocks, m)
    # small slabs: the merge copies several slabs, each from several parts; rank 1 owns
    # nothing and writes an empty part
    x = source.positions[:, 0]
    part = np.where(x < np.median(x), 0, 2)
    options = PredictOptions(formats=("h5", "npz"), partition=part, slab=7)
    res = hamiltonian_groups(3).run(
        predict_rank, m, str(tmp_path / "d"), options, root_only={"inputs": [("q", source)]}
    )[0][0]
    _same_h5(tmp_path / "d" / "q.pred.h5", tmp_path / "serial.h5")
    _same_npz(tmp_path / "d" / "q.pred.npz", tmp_path / "serial.npz")
    assert not (tmp_path / "d" / ".q.parts").exists()
    assert [r["atoms"] for r in res["ranks"]][1] == 0
    assert res["errors"]["n_elements"] > 0 and sum(r["blocks"] for r in res["ranks"]) == len(
        blocks.blocks
    )

    # shift-invert near the middle of the spectrum == dense, plain and generalized
    h = read_csr(tmp_path / "d" / "q.pred.npz")
    s = BlochAssembler(source.matrices["S"], m.basis).at([0, 0, 0], real=True)
    for overlap in (None, s):
        dense = (
            scipy.linalg.eigvalsh(h.toarray())
            if overlap is None
            else scipy.linalg.eigh(h.toarray(), overlap.toarray(), eigvals_only=True)
        )
        sigma = float(np.median(dense)) + 1e-3
        got = eigenvalues_near(h, sigma, 6, s=overlap)
        want = np.sort(dense[np.argsort(np.abs(dense - sigma))[:6]])
        assert np.abs(got - want).max() <= 1e-9 * np.abs(dense).max()


def test_tiled_prediction_equals_tiled_blocks(tmp_path):
    """A 2x1x2 supercell predicted (1 rank) == the primitive cell's prediction tiled; the
    reference H and S are tiled too, so errors are those of the primitive cell."""
    cfg = config()
    m = model(cfg)
    sample = synthetic_sample(quartz((1, 1, 1)), cfg)
    source = _with_overlap(sample.source)
    sample = make_sample("q", source, m.basis, m.cutoff)
    with torch.no_grad():
        pred = m(sample.graph)
    want = tile_blockset(pred.to_blockset(sample.graph), (2, 1, 2))
    options = PredictOptions(formats=("h5",), repeat=(2, 1, 2))
    res = predict_rank(NullCommunicator(), m, str(tmp_path), options, inputs=[("q", source)])
    assert res is not None and res[0]["n_atoms"] == 4 * len(source.species)
    got = read_block_file(tmp_path / "q.pred.h5")
    h = got.matrices["H"]
    assert np.array_equal(h.atom_pairs, want.atom_pairs)
    worst = max(np.abs(a - b).max() for a, b in zip(h.blocks, want.blocks, strict=True))
    assert worst <= TOL * max(np.abs(b).max() for b in want.blocks)
    s_want = tile_blockset(source.matrices["S"], (2, 1, 2))
    assert np.array_equal(got.matrices["S"].atom_pairs, s_want.atom_pairs)
    serial_mae = np.mean(
        np.concatenate(
            [
                np.abs(p[1].numpy() - t[1].numpy()).ravel()
                for kind in ("node", "edge")
                for p, t in zip(
                    getattr(pred, kind).values(), getattr(sample, kind).values(), strict=True
                )
            ]
        )
    )
    assert res[0]["errors"]["mae_meV"] == pytest.approx(1000 * serial_mae, rel=1e-10)
    with pytest.raises(InputError, match=r"--eigs 1000: must be in 1\.\.142 "):
        bad = PredictOptions(repeat=(2, 1, 2), n_eigs=1000)
        predict_rank(NullCommunicator(), m, str(tmp_path), bad, inputs=[("q", source)])


def test_cli_predict_ranks_repeat(tmp_path, capsys):
    cfg = config()
    m = model(cfg)
    save_checkpoint(tmp_path / "m.pt", m, model_type="hamiltonian", config=cfg)
    cell = quartz((1, 1, 1))
    source = BlockFile.from_ase(cell, m.basis)
    empty = BlockSet(species=source.species, atom_pairs=np.zeros((0, 5)), blocks=())
    write_block_file(
        tmp_path / "cell.h5",
        basis=m.basis,
        positions=source.positions,
        cell=source.cell,
        pbc=source.pbc,
        matrices={"S": empty},
    )
    args = ["predict", str(tmp_path / "cell.h5"), "--model", str(tmp_path / "m.pt")]
    args += ["-o", str(tmp_path / "out"), "--format", "npz", "--no-plots"]
    args += ["--ranks", "2", "--partition", "metis", "--repeat", "2", "2", "1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "36 atoms on 2 rank(s)" in text
    tiled = BlockFile.from_ase(cell.repeat((2, 2, 1)), m.basis)
    sample = make_sample("t", tiled, m.basis, m.cutoff, required=False)
    with torch.no_grad():
        blocks = m(sample.graph).to_blockset(sample.graph)
    write_csr(tmp_path / "serial.npz", blocks, m)
    _same_npz(tmp_path / "out" / "cell.pred.npz", tmp_path / "serial.npz")


@pytest.mark.slow
def test_torchrun_predict_equals_serial(tmp_path):
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not installed")
    root = Path(__file__).resolve().parents[2]
    cfg = config()
    m = model(cfg)
    save_checkpoint(tmp_path / "m.pt", m, model_type="hamiltonian", config=cfg)
    from ase.io import write

    write(tmp_path / "cell.extxyz", quartz((1, 1, 1)))
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "atomshard", "predict",
           str(tmp_path / "cell.extxyz"), "--model", str(tmp_path / "m.pt"), "-o",
           str(tmp_path / "out"), "--format", "npz", "--repeat", "1", "1", "2",
           "--partition", "lownn"]  # fmt: skip
    env = {"PYTHONPATH": str(root / "src") + ":" + str(root), "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("18 atoms on 2 rank(s)") == 1, proc.stdout  # rank 0 prints
    from ase.io import read

    tiled = BlockFile.from_ase(read(tmp_path / "cell.extxyz").repeat((1, 1, 2)), m.basis)
    sample = make_sample("t", tiled, m.basis, m.cutoff, required=False)
    with torch.no_grad():
        blocks = m(sample.graph).to_blockset(sample.graph)
    write_csr(tmp_path / "serial.npz", blocks, m)
    _same_npz(tmp_path / "out" / "cell.pred.npz", tmp_path / "serial.npz")
