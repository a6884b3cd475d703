"""The potential benchmark's smoke mode runs and writes its JSON and PNG."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_potential.py"


def test_bench_potential_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_potential", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--smoke", "--out", str(tmp_path)])
    (run,) = report["runs"]
    assert run["impl"] == "atomshard" and run["n_atoms"] == 9 and len(run["times_s"]) == 2
    assert run["median_s"] > 0 and run["peak_rss_mb"] > 0
    assert (tmp_path / "bench_potential.png").stat().st_size > 0
    assert json.loads((tmp_path / "bench_potential.json").read_text())["model"] == "si-config"
