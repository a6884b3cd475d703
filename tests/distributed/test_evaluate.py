"""Distributed == serial: energies, forces, stress over 2, 3, 4 and 8 gloo ranks.

One process group per world size is spawned per module and reused for every case.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from atomshard.comm import RankFailure, launch
from atomshard.runtime import evaluate_distributed
from tests.distributed._toy_potential import ToyLocal, ToyMPNN
from tests.distributed.distributed_cases import (
    STRUCTURES,
    fail_on,
    partitions,
    rel,
    run_calculator,
    run_cases,
    serial,
)

pytestmark = pytest.mark.distributed
TOL = 1e-10


def _compare(model, cases, results):
    assert len(results[0]) == len(cases)
    for c, (name, atoms, _) in enumerate(cases):
        ref = serial(model, atoms)
        energy, stress, energies, forces = results[0][c]
        for r, per_rank in enumerate(results):  # energy and stress identical everywhere
            assert per_rank[c][0] == energy, f"{name}: rank {r} energy differs from rank 0"
            if stress is not None:
                assert np.array_equal(per_rank[c][1], stress)
        assert rel(energy, ref["energy"]) <= TOL, name
        assert rel(energies, ref["energies"]) <= TOL, name
        assert rel(forces, ref["forces"]) <= TOL, name
        if ref["stress"] is None:
            assert stress is None, name
        else:
            assert rel(stress, ref["stress"]) <= TOL, name


def _cases(n_ranks: int, structures=tuple(STRUCTURES)):
    cases = []
    for sname in structures:
        atoms = STRUCTURES[sname]()
        for pname, part in partitions(atoms, n_ranks).items():
            cases.append((f"{sname}/{pname}/{n_ranks} ranks", atoms, part))
    return cases


@pytest.mark.parametrize("n_ranks", [2, 3, 4])
def test_mpnn_distributed_equals_serial(groups, n_ranks):
    model = ToyMPNN()
    cases = _cases(n_ranks)
    results = groups(n_ranks).run(run_cases, model, root_only={"cases": cases})
    _compare(model, cases, results)


@pytest.mark.parametrize("transport", ["p2p", "all_to_all"])
def test_transports_agree(groups, transport):
    model = ToyMPNN(n_layers=2, seed=3)
    cases = _cases(3, ("quartz", "slab"))
    results = groups(3).run(run_cases, model, transport=transport, root_only={"cases": cases})
    _compare(model, cases, results)


def test_strictly_local_model_skips_feature_exchange(groups):
    model = ToyLocal()
    cases = _cases(3, ("quartz", "triclinic"))
    results = groups(3).run(run_cases, model, root_only={"cases": cases})
    _compare(model, cases, results)


def test_eight_ranks_more_than_sensible():
    """8 ranks on 2 atoms and on a quartz cell: several ranks own nothing."""
    model = ToyMPNN(n_layers=2)
    cases = _cases(8, ("triclinic", "quartz"))
    results = launch(run_cases, 8, model, threads_per_rank=1, root_only={"cases": cases})
    _compare(model, cases, results)


def test_calculator_same_on_every_rank(groups):
    model = ToyMPNN()
    atoms = STRUCTURES["quartz"]()
    part = partitions(atoms, 2)["slabs"]
    results = groups(2).run(run_calculator, model, atoms, part)
    e1, f1, s1, e2, f2 = results[0]
    for other in results[1:]:
        assert other[0] == e1 and np.array_equal(other[1], f1) and np.array_equal(other[2], s1)
        assert other[3] == e2 and np.array_equal(other[4], f2)
    ref = serial(model, atoms)
    assert rel(e1, ref["energy"]) <= TOL and rel(f1, ref["forces"]) <= TOL
    moved = atoms.copy()
    moved.positions[0] += 0.03
    ref2 = serial(model, moved)
    assert rel(e2, ref2["energy"]) <= TOL and rel(f2, ref2["forces"]) <= TOL
    s = ref["stress"]
    voigt = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    assert rel(s1, voigt) <= TOL


def test_evaluate_distributed_entry_point(tmp_path):
    model = ToyMPNN(n_layers=2)
    frames = [STRUCTURES["quartz"](), STRUCTURES["slab"]()]
    path = tmp_path / "profile.json"
    out = evaluate_distributed(
        model, frames, 2, partition=_z_halves, profile_path=path, threads_per_rank=1
    )
    assert len(out["frames"]) == 2
    for atoms, res in zip(frames, out["frames"]):
        ref = serial(model, atoms)
        assert rel(res.energy, ref["energy"]) <= TOL
        assert rel(res.forces, ref["forces"]) <= TOL
    import json

    doc = json.loads(path.read_text())
    assert doc["world_size"] == 2 and len(doc["ranks"]) == 2
    for r in doc["ranks"]:
        assert r["forward_exchanges_per_step"] == 3  # positions + one per layer
        assert 0 < r["exchange_s"] < r["step_s"]
    serial_out = evaluate_distributed(model, frames[:1], 1)
    assert rel(serial_out["frames"][0].energy, serial(model, frames[0])["energy"]) <= 1e-14


def _z_halves(structure, src, dst, shifts, n_parts):
    z = structure.positions[:, 2]
    return (z > np.median(z)).astype(np.int64)


@pytest.mark.parametrize("how", ["raise", "die"])
def test_failing_rank_stops_everyone(how):
    t0 = time.monotonic()
    with pytest.raises(RankFailure, match="rank 1") as info:
        launch(fail_on, 3, 1, how, timeout_s=30, threads_per_rank=1)
    assert time.monotonic() - t0 < 60
    if how == "raise":
        assert "deliberate failure on rank 1" in str(info.value)
    else:
        assert "exit code 3" in str(info.value)


def test_silent_rank_times_out_with_message():
    t0 = time.monotonic()
    with pytest.raises(RankFailure, match="timed out") as info:
        launch(fail_on, 2, 1, "hang", timeout_s=3, threads_per_rank=1)
    assert time.monotonic() - t0 < 60
    assert "another rank has probably died" in str(info.value)
