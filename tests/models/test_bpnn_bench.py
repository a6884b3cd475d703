"""The BPNN benchmark script runs end to end in smoke mode (it must never rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import shared_data

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_bpnn.py"


def test_bench_bpnn_smoke(tmp_path: Path) -> None:
    shared_data("n2p2", "H2O_RPBE-D3")
    subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)], check=True,
                   capture_output=True, text=True, timeout=300)  # fmt: skip
    report = json.loads((tmp_path / "bpnn.json").read_text())
    graph, positions = report["results"]
    assert (graph["path"], positions["path"]) == ("graph", "positions")
    for run in (graph, positions):
        assert run["n_atoms"] == 150 and run["atom_evals_per_s"] > 0 and run["peak_rss_mib"] > 0
    assert {f["path"] for f in report["memory_extrapolation"]} == {"graph", "positions"}
    assert set(report["kernels"]["cpu_median_s"]) == {
        "native",
        "torch store",
        "torch recompute",
        "torch explicit",
    }
    assert set(report["time_split"][0]) >= {"symmetry_functions", "network", "forces_backward"}
    assert (tmp_path / "bpnn.png").stat().st_size > 1000
