"""Band-energy loss of the Hamiltonian trainer (atomshard.train.hamiltonian_bands).

Reference data here are made by a fixed random "teacher" model (H) and a second one
(the off-site part of S, scaled so S stays positive definite), written as block files;
the checks are against scipy's dense generalised eigenvalues of those files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.hamiltonian.assembly import band_structure
from atomshard.hamiltonian.blocks import BlockSet
from atomshard.hamiltonian.files import write_block_file
from atomshard.models.hamiltonian import HamiltonianConfig, HamiltonianModel
from atomshard.models.hamiltonian.data import load_samples
from atomshard.models.hamiltonian.model import HamiltonianPrediction
from atomshard.train.hamiltonian import TrainingConfig, evaluate, train
from atomshard.train.hamiltonian_bands import (
    DEFAULT_KPOINTS,
    _predicted_bands,
    band_deviations,
    band_target,
)

BASIS = {"O": "2s1p1d", "H": "1s1p"}
CUTOFF = 4.0


def _model(seed: int, **kw: object) -> HamiltonianModel:
    torch.manual_seed(seed)
    settings: dict[str, object] = {"cutoff": CUTOFF, "channels": 4, "hidden": 6, "n_layers": 1}
    settings.update(kw)
    return HamiltonianModel(HamiltonianConfig(basis=BASIS, **settings))  # type: ignore[arg-type]


def _structures() -> list[Atoms]:
    out = []
    for k, shift in enumerate((0.0, 0.05, -0.04, 0.08)):
        cell = np.diag([3.3 + 0.1 * k, 3.1, 3.4])
        cell[1, 0] = 0.4 * (k % 2)  # triclinic for every other cell
        out.append(
            Atoms(
                "OH2",
                positions=[[0, 0, 0.1 + shift], [0, 0.76, -0.47], [0.1, -0.76, -0.47 + shift]],
                cell=cell,
                pbc=True,
            )
        )
    return out


def _write_set(folder: Path, structures: list[Atoms], *, metadata: bool = True) -> list[Path]:
    """Teacher H; S = 1 on site + 0.02 x a second teacher's blocks off site (and on-site
    off-diagonal), symmetric by construction (the model's blocks are Hermitian)."""
    folder.mkdir(parents=True, exist_ok=True)
    teacher, overlap = _model(1), _model(2)
    paths = []
    for k, atoms in enumerate(structures):
        graph = AtomicGraph.from_ase(atoms, CUTOFF)
        with torch.no_grad():
            h = teacher(graph).to_blockset(graph)
            s_raw = overlap(graph).to_blockset(graph)
        s_blocks = []
        for (rx, ry, rz, i, j), b in zip(s_raw.atom_pairs.tolist(), s_raw.blocks, strict=True):
            b = 0.02 * b / max(1.0, float(np.abs(b).max()))
            if (rx, ry, rz) == (0, 0, 0) and i == j:
                b = b + np.eye(b.shape[0])
            s_blocks.append(b)
        s = BlockSet(species=s_raw.species, atom_pairs=s_raw.atom_pairs, blocks=tuple(s_blocks))
        path = folder / f"{k:05d}.h5"
        write_block_file(
            path,
            basis=teacher.basis,
            positions=atoms.positions,
            cell=atoms.cell.array,
            pbc=atoms.pbc,
            matrices={"H": h, "S": s},
            metadata={"n_electrons": 10} if metadata else None,
        )
        paths.append(path)
    return paths


def _as_prediction(sample) -> HamiltonianPrediction:  # type: ignore[no-untyped-def]
    return HamiltonianPrediction(
        node={k: (i, b.clone()) for k, (i, b) in sample.node.items()},
        edge={k: (i, b.clone()) for k, (i, b) in sample.edge.items()},
    )


def test_band_path_reproduces_scipy_bands(tmp_path: Path) -> None:
    """With the reference blocks as the prediction, the differentiable path's bands equal
    scipy's dense generalised eigenvalues of the file at Γ, X, M, R (periodic, triclinic)
    and at Γ (a molecule), and so the deviations vanish; a batch of two gives each
    structure's own deviations."""
    periodic = _structures()[:2]
    molecule = Atoms("OH2", positions=[[0, 0, 0.1], [0, 0.76, -0.47], [0.1, -0.76, -0.45]])
    paths = _write_set(tmp_path / "set", [*periodic, molecule])
    samples, basis = load_samples(paths, None, CUTOFF)
    for s in samples:
        t = band_target(s, window=50.0)
        src = s.source
        k = DEFAULT_KPOINTS if src.pbc.any() else np.zeros((1, 3))
        ref = band_structure(src.matrices["H"], src.matrices["S"], basis, k)
        assert np.allclose(t.reference.numpy(), ref, atol=1e-12)
        assert t.n_bands == ref.size  # a window of 50 eV holds them all
        values = torch.cat([b.reshape(-1) for _, b in [*s.node.values(), *s.edge.values()]])
        bands = _predicted_bands(values, t)
        assert np.allclose(bands.numpy(), ref, atol=1e-10, rtol=0)
        (dev,) = band_deviations(_as_prediction(s), [s], [t])
        assert float(dev.abs().max()) < 1e-10
        if not src.pbc.any():
            assert t.phases.shape[0] == 1
    from atomshard.models.hamiltonian.data import collate_samples

    pair = samples[:2]
    targets = [band_target(s) for s in pair]
    batch = collate_samples(pair)
    perturbed = _as_prediction(batch)
    for _, (_, b) in perturbed.edge.items():
        b.mul_(1.1)
    joint = band_deviations(perturbed, pair, targets)
    for s, t, got in zip(pair, targets, joint, strict=True):
        alone = _as_prediction(s)
        for _, (_, b) in alone.edge.items():
            b.mul_(1.1)
        (want,) = band_deviations(alone, [s], [t])
        assert float(want.abs().max()) > 1e-3  # the perturbation shows
        assert torch.allclose(got, want, atol=1e-12, rtol=0)


def test_band_gradient_matches_finite_differences(tmp_path: Path) -> None:
    (path,) = _write_set(tmp_path / "set", _structures()[2:3])
    (sample,), _ = load_samples([path], None, CUTOFF)
    target = band_target(sample, window=1.0)
    values = torch.cat([b.reshape(-1) for _, b in [*sample.node.values(), *sample.edge.values()]])
    weights = torch.linspace(0.5, 1.5, int(target.select.sum()), dtype=torch.float64)

    def f(v: torch.Tensor) -> torch.Tensor:
        return (_predicted_bands(v, target)[target.select] * weights).sum()

    x = (values + 0.01 * torch.randn_like(values)).requires_grad_()
    (g,) = torch.autograd.grad(f(x), x)
    direction = torch.randn_like(values)
    eps = 1e-6
    fd = (f(x.detach() + eps * direction) - f(x.detach() - eps * direction)) / (2 * eps)
    assert float((g * direction).sum()) == pytest.approx(float(fd), rel=1e-6)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_band_stage_trains_resumes_and_reports(tmp_path: Path) -> None:
    """Stage 2 starts from the best stage-1 weights, reports band MAE per epoch, lowers
    it on the validation structure, selects best.pt by the stage's score and resumes."""
    paths = _write_set(tmp_path / "set", _structures())
    train_s, _ = load_samples(paths[:3], None, CUTOFF)
    val_s, _ = load_samples(paths[3:], None, CUTOFF)
    cfg = _model(0).config
    run = tmp_path / "run"
    common = {"lr": 5e-3, "band_lr": 2e-3, "band_weight": 1.0, "seed": 0}
    train(cfg, train_s, val_s, TrainingConfig(epochs=3, band_epochs=2, **common), run)
    rows = _rows(run / "metrics.csv")
    assert [r["stage"] for r in rows] == ["1", "1", "1", "2", "2"]
    assert all(float(r["val_band_mae"]) > 0 for r in rows)  # logged in stage 1 too
    assert all(r["train_band_mae"] == "" for r in rows[:3])
    assert all(r["val_score"] == r["val_mae"] for r in rows[:3])  # stage 1: blocks alone
    assert all(float(r["val_score"]) > float(r["val_mae"]) for r in rows[3:])
    best = torch.load(run / "best.pt", weights_only=False)["metadata"]
    assert best["stage"] == 2  # the stage's own best (its score is reset at the start)
    # resume: two more band epochs continue from last.pt
    out = train(cfg, train_s, val_s, TrainingConfig(epochs=3, band_epochs=6, **common), run)
    rows = _rows(run / "metrics.csv")
    assert out.epochs_run == 4 and len(rows) == 9
    band = [float(r["val_band_mae"]) for r in rows[2:]]
    assert min(band[1:]) < band[0]  # the band loss lowers the best stage-1 band error
    from atomshard.models.checkpoint import load_model

    model = load_model(run / "best.pt")
    chosen = min(rows[3:], key=lambda r: float(r["val_score"]))
    targets = {id(s): band_target(s) for s in val_s}
    got = evaluate(model, val_s, targets)["band_mae"]  # type: ignore[arg-type]
    assert got == pytest.approx(float(chosen["val_band_mae"]), rel=1e-9)


def test_band_stage_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _model(0).config
    paths = _write_set(tmp_path / "nometa", _structures()[:1], metadata=False)
    samples, _ = load_samples(paths, None, CUTOFF)
    with pytest.raises(InputError, match=r"00000\.h5: a periodic structure without 'n_electrons'"):
        train(cfg, samples, [], TrainingConfig(epochs=1, band_epochs=1), tmp_path / "r1")
    assert not (tmp_path / "r1" / "last.pt").exists()  # refused before any training
    with pytest.raises(InputError, match="band_weight"):
        TrainingConfig(band_weight=0.0)
    with pytest.raises(InputError, match="band_kpoints"):
        TrainingConfig(band_kpoints=((0.0, 0.0),))  # type: ignore[arg-type]
    from atomshard.train.hamiltonian_distributed import train_distributed

    with pytest.raises(InputError, match="band-energy stage needs the whole H"):
        train_distributed(None, _model(0), None, TrainingConfig(band_epochs=2))  # type: ignore[arg-type]
    from atomshard.hamiltonian import assembly

    monkeypatch.setattr(assembly, "DENSE_MAX_ORBITALS", 10)
    with pytest.raises(InputError, match="18 orbitals is too many for the band loss"):
        band_target(samples[0])
    monkeypatch.undo()
    samples[0].source.matrices.pop("S")
    with pytest.raises(InputError, match="needs reference H and S"):
        band_target(samples[0])
