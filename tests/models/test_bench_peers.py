"""The peers-table benchmark's smoke mode runs, writes its JSON and PNG, and names the peers
it did not run (nequip and mace need ``--peer-python``) instead of dropping them."""

from __future__ import annotations

import importlib.util
import json

from tests.bench_scripts import load_benchmark


def test_bench_peers_smoke(tmp_path):
    module = load_benchmark("bench_peers")
    report = module.main(["--smoke", "--out", str(tmp_path)])
    runs = {r["impl"]: r for r in report["runs"]}
    assert set(runs) == {"atomshard", "sevenn", "nequip", "mace"}
    ours = runs["atomshard"]
    assert ours["status"] == "ok" and ours["n_atoms"] == 72 and len(ours["times_s"]) == 1
    assert ours["atom_steps_per_s"] > 0 and ours["peak_rss_mb"] > 0
    assert ours["time_ratio_to_atomshard"] == 1.0
    if importlib.util.find_spec("sevenn") is not None:
        assert runs["sevenn"]["status"] == "ok" and runs["sevenn"]["atom_steps_per_s"] > 0
    for peer in ("nequip", "mace"):
        assert runs[peer]["status"] == "not run (no --peer-python)"
        assert report["not_run"][peer] == "not run (no --peer-python)"
    assert (tmp_path / "bench_peers.png").stat().st_size > 0
    saved = json.loads((tmp_path / "bench_peers.json").read_text())
    assert saved["peers"]["mace"]["status"] == "not run (no --peer-python)"
    assert saved["model"]["channels"] == 32 and saved["model"]["n_layers"] == 4
