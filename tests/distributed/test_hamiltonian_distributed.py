"""Graph-parallel Hamiltonian model == serial: blocks, loss gradients, training steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomshard.graph import AtomicGraph
from atomshard.models.checkpoint import read_checkpoint
from atomshard.models.hamiltonian import HamiltonianModel
from atomshard.train.hamiltonian import block_loss, train
from atomshard.train.hamiltonian_distributed import fit_distributed, train_rank
from tests.distributed.hamiltonian_cases import (
    blocks_by_pair,
    config,
    model,
    rank_gradients,
    rank_predict,
    structures,
    synthetic_sample,
    training_config,
)

pytestmark = pytest.mark.distributed
TOL = 1e-10


@pytest.fixture
def groups(hamiltonian_groups):
    return hamiltonian_groups


def _empty_part(atoms, n_ranks: int) -> np.ndarray:
    """Slabs along x with part 1 left empty."""
    x = atoms.positions[:, 0]
    order = np.argsort(x, kind="stable")
    part = np.empty(len(atoms), np.int64)
    part[order] = np.arange(len(atoms)) * n_ranks // len(atoms)
    return np.where(part == 1, 0, part)


@pytest.mark.parametrize("n_ranks", [2, 3, pytest.param(4, marks=pytest.mark.slow)])
def test_predicted_blocks_equal_serial(groups, n_ranks):
    m = model()
    cases, names = [], []
    chosen = {"quartz": ("lownn", "metis", "empty"), "triclinic": ("lownn",), "cluster": ("metis",)}
    for sname, atoms in structures().items():
        for spec in chosen[sname]:
            cases.append((atoms, _empty_part(atoms, n_ranks) if spec == "empty" else spec))
            names.append(f"{sname}/{spec}")
    results = groups(n_ranks).run(
        rank_predict, m.config, m.state_dict(), root_only={"cases": cases}
    )
    for c, (atoms, _) in enumerate(cases):
        graph = AtomicGraph.from_ase(atoms, m.cutoff)
        with torch.no_grad():
            ref = blocks_by_pair(m(graph).to_blockset(graph))
        got: dict = {}
        for per_rank in results:
            _, blocks = per_rank[c]
            assert not set(got) & set(blocks), f"{names[c]}: a block is owned twice"
            got.update(blocks)
        assert set(got) == set(ref), names[c]
        scale = max(np.abs(b).max() for b in ref.values())
        worst = max(np.abs(got[k] - ref[k]).max() for k in ref) / scale
        assert worst <= TOL, f"{names[c]}: {worst:.2e}"
        if names[c].endswith("empty") and len(atoms) > 2:
            assert results[1][c][0] == 0  # the empty rank really owned nothing


@pytest.mark.parametrize(("n_ranks", "spec"), [(2, "lownn"), (3, "metis"), (3, "empty")])
def test_training_gradients_equal_serial(groups, n_ranks, spec):
    cfg = config()
    m = model(cfg)
    atoms = structures()["quartz"]
    sample = synthetic_sample(atoms, cfg)
    tcfg = training_config()
    part = _empty_part(atoms, n_ranks) if spec == "empty" else spec
    results = groups(n_ranks).run(
        rank_gradients, cfg, m.state_dict(), tcfg, part, root_only={"sample": sample}
    )
    loss = block_loss(m(sample.graph), sample, tcfg)
    m.zero_grad()
    loss.backward()
    ref = {k: p.grad for k, p in m.named_parameters() if p.grad is not None}
    # relative to each parameter's gradient, floored at 1e-6 of the largest: some
    # gradients are zero in exact arithmetic (softmax shifts) and pure round-off here
    floor = 1e-6 * max(float(g.abs().max()) for g in ref.values())
    for r, (d_loss, grads) in enumerate(results):
        assert abs(d_loss - float(loss.detach())) <= TOL * abs(float(loss.detach())), r
        assert set(grads) == set(ref)
        for k, g in ref.items():
            err = float((grads[k] - g).abs().max()) / max(float(g.abs().max()), floor)
            assert err <= TOL, f"rank {r} {k}: {err:.2e}"


def test_training_steps_reach_serial_parameters(groups, tmp_path):
    cfg = config()
    atoms = structures()["quartz"]
    sample = synthetic_sample(atoms, cfg)
    tcfg = training_config(epochs=3)
    train(cfg, [sample], [], tcfg, tmp_path, resume=False)
    serial_state = read_checkpoint(tmp_path / "last.pt")["state_dict"]
    serial_best = read_checkpoint(tmp_path / "best.pt")["state_dict"]
    results = groups(3).run(train_rank, cfg, tcfg, "lownn", root_only={"sample": sample})
    assert results[1:] == [None, None]
    one = fit_distributed(cfg, sample, tcfg, n_ranks=1, output=tmp_path / "one")
    initial = HamiltonianModel(cfg).state_dict()  # not trained: the steps must move things
    moved = 0.0
    for res in (results[0], one):
        assert len(res.history) == 3
        for k, v in serial_state.items():
            if not v.is_floating_point():
                continue
            err = float((res.state_dict[k] - v).abs().max()) / max(float(v.abs().max()), 1e-300)
            assert err <= 1e-10, f"{k}: {err:.2e}"
            moved = max(moved, float((v - initial[k]).abs().max()))
    assert moved > 1e-3
    # the written model holds the EMA weights, as the serial best.pt (best = last epoch here)
    written = read_checkpoint(tmp_path / "one" / "model.pt")["state_dict"]
    best_epoch = read_checkpoint(tmp_path / "best.pt")["metadata"]["epoch"]
    if best_epoch == 3:
        for k, v in serial_best.items():
            if v.is_floating_point():
                assert float((written[k] - v).abs().max()) <= 1e-10 * float(v.abs().max()) + 1e-300


def test_distributed_training_checkpoints_and_resumes(tmp_path):
    """2 ranks with an output folder: last.pt in the trainers' one layout and metrics.csv
    while it runs; 2 epochs, then the same call with 4 resumes from last.pt and ends with
    the weights of 4 epochs straight."""
    from atomshard.train.metrics import read_metrics

    cfg = config()
    sample = synthetic_sample(structures()["quartz"], cfg)
    straight = fit_distributed(cfg, sample, training_config(epochs=4), n_ranks=2)
    run = tmp_path / "run"
    first = fit_distributed(cfg, sample, training_config(epochs=2), n_ranks=2, output=run)
    assert len(first.history) == 2
    saved = read_checkpoint(run / "last.pt")["training"]
    assert saved["state"]["epoch"] == 2 and set(saved) >= {"model", "ema", "optimizer"}
    resumed = fit_distributed(cfg, sample, training_config(epochs=4), n_ranks=2, output=run)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")] == [1.0, 2.0, 3.0, 4.0]
    for k, v in straight.state_dict.items():
        if v.is_floating_point():
            err = float((resumed.state_dict[k] - v).abs().max())
            assert err <= 1e-12 * max(float(v.abs().max()), 1.0), f"{k}: {err:.2e}"
    assert (run / "model.pt").exists() and (run / "learning_curve.png").exists()


def test_cosine_schedule_steps_equal_serial(tmp_path):
    """The full-batch trainer follows the same cosine learning rates as the serial one and
    reaches its parameters (one structure, one step per epoch in both)."""
    from dataclasses import replace

    from atomshard.train.config import cosine_lr

    cfg = config()
    sample = synthetic_sample(structures()["quartz"], cfg)
    tcfg = replace(training_config(epochs=3), lr_schedule="cosine", min_lr=1e-3)
    serial = train(cfg, [sample], [], tcfg, tmp_path, resume=False)
    want = [cosine_lr(5e-3, 1e-3, e, 3) for e in range(3)]
    assert [row["lr"] for row in serial.history] == pytest.approx(want, rel=1e-12)
    one = fit_distributed(cfg, sample, tcfg, n_ranks=1)
    assert [row["lr"] for row in one.history] == pytest.approx(want, rel=1e-12)
    serial_state = read_checkpoint(tmp_path / "last.pt")["state_dict"]
    for k, v in serial_state.items():
        if v.is_floating_point():
            err = float((one.state_dict[k] - v).abs().max()) / max(float(v.abs().max()), 1e-300)
            assert err <= TOL, f"{k}: {err:.2e}"
