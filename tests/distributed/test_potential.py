"""Distributed == serial for the NequIP-class potential: random weights and SevenNet-0.

Float64 throughout; partitions from the real partitioners (Low-NN, METIS, grid) and one
with an empty rank; one process group per world size, reused for every case.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.distributed.distributed_cases import (
    build_model,
    partitions,
    quartz,
    rel,
    run_cases,
    serial,
    slab,
    tiny_triclinic,
)

pytestmark = pytest.mark.distributed
TOL = 1e-10


def _structures():
    small_slab = quartz((1, 1, 1), seed=2)
    small_slab.center(vacuum=5.0, axis=2)
    return {"quartz": quartz((2, 1, 1)), "triclinic": tiny_triclinic(), "slab": small_slab}


def _cases(n_ranks: int, methods=("lownn", "metis", "grid")):
    cases = []
    for sname, atoms in _structures().items():
        for method in methods:
            cases.append((f"{sname}/{method}/{n_ranks}", atoms, method))
        cases.append((f"{sname}/empty/{n_ranks}", atoms, partitions(atoms, n_ranks)["empty"]))
    return cases


def _check(kind, cases, results):
    model = build_model(kind)
    refs: dict[int, dict] = {}  # one serial evaluation per structure object
    for c, (name, atoms, _) in enumerate(cases):
        if id(atoms) not in refs:
            refs[id(atoms)] = serial(model, atoms)
        ref = refs[id(atoms)]
        assert np.abs(ref["forces"]).max() > 1e-3, "a test with zero forces cannot fail"
        energy, stress, energies, forces = results[0][c]
        assert all(per_rank[c][0] == energy for per_rank in results), name
        assert rel(energy, ref["energy"]) <= TOL, name
        assert rel(energies, ref["energies"]) <= TOL, name
        assert rel(forces, ref["forces"]) <= TOL, name
        assert rel(stress, ref["stress"]) <= TOL, name


@pytest.mark.parametrize(
    ("n_ranks", "methods"),
    # 3 ranks: SevenNet-0 below (grid, METIS, empty rank)
    [(2, ("lownn", "metis", "grid")), (4, ("lownn", "grid"))],
)
def test_nequip_random_weights(groups, n_ranks, methods):
    cases = _cases(n_ranks, methods)  # plus a partition with an empty rank
    _check("nequip", cases, groups(n_ranks).run(run_cases, "nequip", root_only={"cases": cases}))


@pytest.mark.parametrize("n_ranks", [2, 3])
def test_sevennet0(groups, n_ranks):
    pytest.importorskip("sevenn")
    build_model("sevennet-0")  # convert once in this process before the ranks load it
    s = _structures()
    if n_ranks == 2:
        cases = [
            ("quartz/lownn", s["quartz"], "lownn"),
            ("quartz/metis", s["quartz"], "metis"),
            ("triclinic/lownn", s["triclinic"], "lownn"),
            ("slab/grid", s["slab"], "grid"),
        ]
    else:
        cases = [
            ("quartz/grid", s["quartz"], "grid"),
            ("quartz/empty", s["quartz"], partitions(s["quartz"], 3)["empty"]),
            ("triclinic/metis", s["triclinic"], "metis"),
        ]
    results = groups(n_ranks).run(run_cases, "sevennet-0", root_only={"cases": cases})
    _check("sevennet-0", cases, results)


def test_slab_partition_auto(groups):
    """``auto`` picks a partitioner by the cost model; the answer must not depend on it."""
    cases = [("slab/auto", slab(), "auto")]
    _check("nequip", cases, groups(2).run(run_cases, "nequip", root_only={"cases": cases}))


def _node_rows(comm, atoms):
    """Rank side: rows every node-wise module of the NequIP model sees, and the plan's."""
    from atomshard.runtime import DistributedEvaluator, as_structure

    model = build_model("nequip")
    seen: list[int] = []
    hooks = [
        m.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
        for layer in model.layers
        for m in (layer.linear_1, layer.gate)
    ]
    hooks.append(
        model.readout_1.register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape[0]))
    )
    try:
        ev = DistributedEvaluator(model, comm, partition="lownn")
        local = ev.scatter(as_structure(atoms) if comm.rank == 0 else None)
        energy = float(ev.evaluate_local(local).energy)
    finally:
        for h in hooks:
            h.remove()
    return {
        "seen": seen,
        "n_owned": local.plan.n_owned,
        "n_local": local.plan.n_local,
        "energy": energy,
    }


def test_node_layers_run_on_owned_rows_only(groups):
    """No redundant compute: linears, gates and readout see owned rows, never halo rows
    (the exchange fills those), while the answer stays the serial one."""
    atoms = quartz((2, 1, 1))
    results = groups(2).run(_node_rows, atoms)
    ref = serial(build_model("nequip"), atoms)
    for r, res in enumerate(results):
        assert res["n_local"] > res["n_owned"] > 0, f"rank {r} has no halo: the test is void"
        assert res["seen"] and set(res["seen"]) == {res["n_owned"]}, (r, res)
        assert rel(res["energy"], ref["energy"]) <= TOL


def _overlap_runs(comm, atoms):
    """Rank side: the same evaluation with the exchange overlapped (one chunk, many chunks
    with recompute) and not; the forward/backward exchanges that were overlapped."""
    from atomshard.comm import ExchangeProfiler
    from atomshard.models.potential.conv import OverlapPlan
    from atomshard.runtime import DistributedEvaluator, as_structure

    model = build_model("nequip")
    n_layers = len(model.layers)
    out = {}
    settings = {
        "off": {"overlap": False},
        "on": {"overlap": True},
        "on/chunks": {"overlap": True, "chunk_edges": 40, "recompute": True},
    }
    try:
        for name, kw in settings.items():
            model.set_convolution(**kw)
            profiler = ExchangeProfiler()
            ev = DistributedEvaluator(model, comm, partition="lownn", profiler=profiler)
            local = ev.scatter(as_structure(atoms) if comm.rank == 0 else None)
            res = ev.evaluate_local(local)
            overlapped = [e.direction for e in profiler.exchanges if e.overlapped]
            out[name] = {
                "energy": float(res.energy),
                "forces": res.forces.numpy(),
                "stress": res.stress.numpy(),
                "overlapped": overlapped,
            }
        g = local.graph()
        plan = OverlapPlan(g.src, g.dst, local.plan.n_owned)
        out["n_inner"] = plan.n_inner_nodes
        out["n_owned"] = local.plan.n_owned
        out["n_layers"] = n_layers
        out["global_ids"] = np.asarray(local.plan.local_to_global[: local.plan.n_owned])
    finally:
        model.set_convolution(overlap=True, chunk_edges="auto", recompute="auto")
    return out


def test_exchange_overlapped_with_interior_nodes(groups):
    """Each layer's halo exchange is in flight while the interior nodes are computed (and
    its adjoint while their backward runs): every exchange of the force pass is overlapped,
    and the numbers are those of the blocking exchange and of the serial model."""
    atoms = quartz((6, 2, 2))  # 216 atoms: each rank has interior atoms at 3.5 Å
    results = groups(2).run(_overlap_runs, atoms)
    ref = serial(build_model("nequip"), atoms)
    for r, res in enumerate(results):
        assert 0 < res["n_inner"] < res["n_owned"], f"rank {r}: no interior or no boundary"
        n = res["n_layers"]
        assert res["off"]["overlapped"] == []
        for name in ("on", "on/chunks"):
            # layer 1's adjoint is not needed (its input does not depend on positions)
            assert res[name]["overlapped"].count("forward") == n, (r, name)
            assert res[name]["overlapped"].count("backward") == n - 1, (r, name)
            assert rel(res[name]["energy"], res["off"]["energy"]) <= 1e-13
            assert rel(res[name]["forces"], res["off"]["forces"]) <= 1e-12
            assert rel(res[name]["stress"], res["off"]["stress"]) <= 1e-12
            assert rel(res[name]["energy"], ref["energy"]) <= TOL
            assert rel(res[name]["forces"], ref["forces"][res["global_ids"]]) <= TOL
