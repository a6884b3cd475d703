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
