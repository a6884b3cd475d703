"""The Hamiltonian subcommands: ``data pyscf``, ``train``, ``predict``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from atomshard.cli import main


def test_data_pyscf_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pyscf")
    out = tmp_path / "set"
    assert main(["data", "pyscf", "H2", "--out", str(out), "--n-configs", "2"]) == 0
    assert sorted(p.name for p in out.glob("*.h5")) == ["00000.h5", "00001.h5"]
    assert "2 written" in capsys.readouterr().out
    assert main(["data", "pyscf", "missing.xyz", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def _write_water_set(folder: Path, n: int) -> None:
    """Tiny synthetic H/S block files (no PySCF): H depends smoothly on geometry."""
    import numpy as np
    from ase.build import molecule

    from atomshard.hamiltonian.basis import OrbitalBasis
    from atomshard.hamiltonian.blocks import BlockSet
    from atomshard.hamiltonian.files import write_block_file

    basis = OrbitalBasis(shells={"O": "1s1p", "H": "1s"})
    rng = np.random.default_rng(0)
    folder.mkdir()
    for c in range(n):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(scale=0.05, size=(3, 3))
        pos = atoms.positions
        offs = basis.offsets(atoms.numbers)
        h = np.zeros((offs[-1], offs[-1]))
        s = np.eye(offs[-1])
        for i in range(3):
            for j in range(3):
                if i != j:
                    r = np.linalg.norm(pos[i] - pos[j])
                    h[offs[i], offs[j]] = -2.0 * np.exp(-r)
                    s[offs[i], offs[j]] = 0.2 * np.exp(-r)
        h[0, 0], h[1:4, 1:4], h[4, 4], h[5, 5] = -20.0, -5.0 * np.eye(3), -3.0, -3.0
        mats = {k: BlockSet.from_dense(m, atoms.numbers, basis) for k, m in (("H", h), ("S", s))}
        write_block_file(
            folder / f"{c:05d}.h5",
            basis=basis,
            positions=pos,
            cell=np.zeros((3, 3)),
            pbc=np.zeros(3, bool),
            matrices=mats,
        )


def test_train_resume_and_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    _write_water_set(tmp_path / "set", 3)
    config = {
        "model": {"kind": "hamiltonian", "cutoff": 3.0, "channels": 4, "hidden": 4, "n_layers": 1},
        "data": {"train": str(tmp_path / "set"), "valid_fraction": 0.34},
        "training": {"epochs": 2, "lr": 0.01},
        "output": str(tmp_path / "run"),
    }
    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    assert main(["train", str(cfg_path)]) == 0
    run = tmp_path / "run"
    assert {"best.pt", "last.pt", "metrics.csv", "learning_curve.png"} <= {
        p.name for p in run.iterdir()
    }
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    config["training"]["epochs"] = 3  # type: ignore[index]
    cfg_path.write_text(yaml.safe_dump(config))
    assert main(["train", str(cfg_path)]) == 0  # resumes: one more epoch
    assert len((run / "metrics.csv").read_text().splitlines()) == 4
    # SIGTERM (a scheduler's warning) in epoch 4: the step finishes, last.pt is written,
    # exit 143; the same command then resumes and runs epoch 4 again in full
    import os
    import signal

    from atomshard.train import hamiltonian as trainer

    config["training"]["epochs"] = 5  # type: ignore[index]
    cfg_path.write_text(yaml.safe_dump(config))
    real = trainer.block_loss
    calls = []

    def loss_then_signal(*args, **kwargs):  # the first step of epoch 4 asks to stop
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    trainer.block_loss = loss_then_signal
    try:
        assert main(["train", str(cfg_path)]) == 143
    finally:
        trainer.block_loss = real
    assert "SIGTERM" in capsys.readouterr().out
    saved = torch.load(run / "last.pt", weights_only=False)["training"]["state"]
    assert saved["epoch"] == 3 and len(saved["history"]) == 3
    assert len((run / "metrics.csv").read_text().splitlines()) == 4
    assert main(["train", str(cfg_path)]) == 0
    assert len((run / "metrics.csv").read_text().splitlines()) == 6
    capsys.readouterr()
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "set" / "00000.h5"),
                "--model",
                str(run / "best.pt"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "MAE meV" in text and "Γ eigenvalues" in text
    assert (out / "00000.pred.h5").exists() and (out / "00000.errors.png").exists()
    # orbital energies with the reference S: 10 electrons (a neutral water), 5 occupied
    assert "orbitals (reference S): HOMO" in text
    from atomshard.hamiltonian.files import read_block_file
    from atomshard.hamiltonian.metrics import orbital_errors

    ref = read_block_file(tmp_path / "set" / "00000.h5")
    got = read_block_file(out / "00000.pred.h5").matrices["H"]
    want = orbital_errors(got, ref.matrices["H"], ref.matrices["S"], ref.basis, 10)
    with (out / "band_edges.csv").open() as fh:
        row = next(r for r in csv.DictReader(fh) if r["structure"] == "00000")
    assert float(row["homo_error"]) == pytest.approx(want["homo_error"], rel=1e-9, abs=1e-12)
    assert float(row["occupied_mae"]) == pytest.approx(want["occupied_mae"], rel=1e-9)
    assert int(row["n_occupied"]) == 5 and want["occupied_mae"] > 0
    assert (
        main(
            [
                "predict",
                str(tmp_path / "set"),
                "--model",
                str(run / "best.pt"),
                "--out",
                str(out),
                "--format",
                "npz",
                "--no-plots",
            ]
        )
        == 0
    )
    assert len(list(out.glob("*.pred.npz"))) == 3
    # a plain structure file: prediction only
    from ase.build import molecule
    from ase.io import write

    write(tmp_path / "w.xyz", molecule("H2O"))
    capsys.readouterr()
    assert (
        main(
            ["predict", str(tmp_path / "w.xyz"), "--model", str(run / "best.pt"), "--out", str(out)]
        )
        == 0
    )
    assert "no reference H" in capsys.readouterr().out
    from atomshard.hamiltonian.files import read_block_file

    assert read_block_file(out / "w.pred.h5").matrices["H"].n_blocks == 9
    # --edge-chunk: edges in chunks of 3 (several chunks), the same blocks to round-off
    chunked = tmp_path / "pred-chunked"
    args = ["predict", str(tmp_path / "w.xyz"), "--model", str(run / "best.pt")]
    assert main([*args, "--out", str(chunked), "--edge-chunk", "3"]) == 0
    a = read_block_file(out / "w.pred.h5").matrices["H"]
    b = read_block_file(chunked / "w.pred.h5").matrices["H"]
    for x, y in zip(a.blocks, b.blocks, strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert main([*args, "--out", str(chunked), "--edge-chunk", "-1"]) == 2
    assert "edge_chunk must be >= 0" in capsys.readouterr().err
    # --model twice: a committee, whose H is the mean of its members' H (best.pt holds
    # the EMA weights of the best epoch, last.pt the raw weights of the last: they differ)
    one = ["predict", str(tmp_path / "w.xyz"), "--no-plots"]
    assert main([*one, "--model", str(run / "last.pt"), "--out", str(tmp_path / "p-last")]) == 0
    capsys.readouterr()
    both = [*one, "--model", str(run / "best.pt"), "--model", str(run / "last.pt")]
    assert main([*both, "--out", str(tmp_path / "p-both")]) == 0
    assert "committee of 2 models" in capsys.readouterr().out
    c = read_block_file(tmp_path / "p-both" / "w.pred.h5").matrices["H"]
    d = read_block_file(tmp_path / "p-last" / "w.pred.h5").matrices["H"]
    assert (
        np.abs(np.concatenate([(x - y).ravel() for x, y in zip(a.blocks, d.blocks)])).max() > 1e-6
    )
    for x, y, z in zip(a.blocks, d.blocks, c.blocks, strict=True):
        np.testing.assert_allclose(z, 0.5 * (x + y), rtol=1e-5, atol=1e-6)
    # the committee over 2 ranks (each member's layers exchange halos): the same blocks
    assert main([*both, "--out", str(tmp_path / "p-both2"), "--ranks", "2"]) == 0
    assert "on 2 rank(s)" in capsys.readouterr().out
    e = read_block_file(tmp_path / "p-both2" / "w.pred.h5").matrices["H"]
    got = {tuple(p): b for p, b in zip(e.atom_pairs.tolist(), e.blocks, strict=True)}
    want = {tuple(p): b for p, b in zip(c.atom_pairs.tolist(), c.blocks, strict=True)}
    assert got.keys() == want.keys()
    for key, b in want.items():
        np.testing.assert_allclose(got[key], b, rtol=0, atol=1e-10)


def test_train_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("model: {kind: bpnn}\n")
    assert main(["train", str(cfg)]) == 2
    assert "unknown model kind 'bpnn'" in capsys.readouterr().err
    cfg.write_text("model: {kind: hamiltonian}\ndata: {train: nowhere/*.h5}\noutput: x\n")
    assert main(["train", str(cfg)]) == 2
    assert "no data matches" in capsys.readouterr().err


def test_predict_periodic_bands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A periodic H chain with R != 0 blocks: predict plots bands against the reference."""
    import numpy as np

    from atomshard.graph import neighbor_list
    from atomshard.hamiltonian.basis import OrbitalBasis
    from atomshard.hamiltonian.blocks import BlockSet
    from atomshard.hamiltonian.files import write_block_file
    from atomshard.models.checkpoint import save_checkpoint
    from atomshard.models.hamiltonian import HamiltonianConfig, HamiltonianModel

    basis = OrbitalBasis(shells={"H": "1s"})
    pos = np.array([[0.0, 0.0, 0.0], [1.4, 0.1, 0.0]])
    cell, pbc = np.diag([3.0, 6.0, 6.0]), np.ones(3, bool)
    src, dst, shifts = neighbor_list(pos, cell, pbc, cutoff=2.5)
    pairs = [(0, 0, 0, 0, 0), (0, 0, 0, 1, 1)]
    hs, ss = [np.array([[-1.0]])] * 2, [np.array([[1.0]])] * 2
    for s, d, sh in zip(src, dst, shifts, strict=True):
        r = np.linalg.norm(pos[s] + sh @ cell - pos[d])
        pairs.append((*sh.tolist(), int(d), int(s)))
        hs.append(np.array([[-np.exp(-r)]]))
        ss.append(np.array([[0.1 * np.exp(-r)]]))
    species = np.array([1, 1])
    mats = {
        "H": BlockSet(species=species, atom_pairs=np.array(pairs), blocks=tuple(hs)),
        "S": BlockSet(species=species, atom_pairs=np.array(pairs), blocks=tuple(ss)),
    }
    write_block_file(
        tmp_path / "chain.h5", basis=basis, positions=pos, cell=cell, pbc=pbc, matrices=mats,
        metadata={"n_electrons": 2},
    )  # fmt: skip
    model = HamiltonianModel(
        HamiltonianConfig(basis={"H": "1s"}, cutoff=2.5, channels=2, hidden=2, n_layers=1)
    )
    save_checkpoint(tmp_path / "m.pt", model, model_type="hamiltonian", config=model.config)
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "chain.h5"),
                "--model",
                str(tmp_path / "m.pt"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "chain.bands.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "edge" in text and "bands at Γ, X, M, R (reference S): VBM" in text
    from atomshard.hamiltonian.files import read_block_file
    from atomshard.hamiltonian.metrics import DEFAULT_KPOINTS, band_errors

    pred = read_block_file(out / "chain.pred.h5").matrices["H"]
    want = band_errors(pred, mats["H"], mats["S"], basis, 2, DEFAULT_KPOINTS)
    with (out / "band_edges.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["vbm_error"]) == pytest.approx(want["vbm_error"], rel=1e-9, abs=1e-12)
    assert float(row["band_mae_window"]) == pytest.approx(want["band_mae_window"], rel=1e-9)
