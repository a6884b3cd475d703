"""The potential benchmark's smoke mode runs and writes its JSON and PNG."""

from __future__ import annotations

import json

import pytest

from tests.bench_scripts import load_benchmark


def test_bench_potential_smoke(tmp_path):
    module = load_benchmark("bench_potential")
    report = module.main(["--smoke", "--out", str(tmp_path)])
    (run,) = report["runs"]
    assert run["time_ratio_to_atomshard"] == 1.0
    assert run["impl"] == "atomshard" and run["n_atoms"] == 9 and len(run["times_s"]) == 2
    assert run["median_s"] > 0 and run["peak_rss_mb"] > 0
    assert (tmp_path / "bench_potential.png").stat().st_size > 0
    assert json.loads((tmp_path / "bench_potential.json").read_text())["model"] == "si-config"


def test_bench_utilisation_smoke(tmp_path):
    """Same weights in both codes (a sevenn-built model converted to ours), JSON and PNG."""
    pytest.importorskip("sevenn", reason="sevenn (atomshard[sevennet]) is not installed")
    module = load_benchmark("bench_utilisation")
    report = module.main(["--smoke", "--out", str(tmp_path)])
    runs = {r["code"]: r for r in report["runs"]}
    assert set(runs) == {"atomshard", "sevenn"}
    assert abs(runs["atomshard"]["energy_ev"] - runs["sevenn"]["energy_ev"]) < 1e-3
    assert runs["atomshard"]["atom_steps_per_s"] > 0 and runs["sevenn"]["peak_rss_mb"] > 0
    assert (tmp_path / "bench_utilisation.png").stat().st_size > 0
    saved = json.loads((tmp_path / "bench_utilisation.json").read_text())
    assert saved["channels"] == [4]


def test_bench_memory_smoke(tmp_path):
    """Both checkpoint settings at two sizes, same energies, fits, JSON and PNG."""
    module = load_benchmark("bench_memory")
    report = module.main(["--smoke", "--out", str(tmp_path), "--checkpoint", "off", "on", "blocks"])
    runs = {(r["n_atoms"], r["checkpoint"]): r for r in report["runs"]}
    assert set(runs) == {(n, s) for n in (9, 72) for s in ("off", "on", "blocks")}
    for n in (9, 72):
        assert runs[n, "on"]["energy_ev"] == runs[n, "off"]["energy_ev"]
        # three blocks (float32 body): the same energy to round-off, more edge work
        assert runs[n, "blocks"]["blocks"] == 3 and runs[n, "blocks"]["edge_work_ratio"] > 1
        assert abs(runs[n, "blocks"]["energy_ev"] - runs[n, "off"]["energy_ev"]) < 1e-5 * n
        assert runs[n, "on"]["peak_rss_mb"] > 0 and runs[n, "on"]["n_edges"] > 0
    fit = module.fit(
        [
            {"n_atoms": 1000, "m": 600.0},
            {"n_atoms": 2000, "m": 700.0},
            {"n_atoms": 4000, "m": 900.0},
        ],
        "m",
        1.0,
    )  # the two largest sizes: 0.1 MB per atom from 500 MB
    assert fit["sizes"] == [2000, 4000] and abs(fit["kb_per_atom"] - 102.4) < 1e-9
    assert (
        fit["atoms_in_budget"] == 5240 and abs(fit["at_1m_atoms_gib"] - (500 + 1e5) / 1024) < 1e-9
    )
    saved = json.loads((tmp_path / "bench_memory.json").read_text())
    assert saved["model"] == "S" and set(saved["fits"]) == {"off", "on", "blocks"}
    assert (tmp_path / "bench_memory.png").stat().st_size > 0
