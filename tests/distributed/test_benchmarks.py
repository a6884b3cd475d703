"""The runtime benchmarks' smoke modes run and write their JSON and PNG."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_exchange_smoke(tmp_path):
    report = _load("bench_exchange").main(["--smoke", "--out", str(tmp_path)])
    rows = report["worlds"][0]["slowest_rank"]
    assert {r["transport"] for r in rows} == {"p2p", "all_to_all"}
    assert all(r["forward_s"] > 0 and r["backward_s"] > 0 for r in rows)
    assert (tmp_path / "bench_exchange.png").exists()
    assert json.loads((tmp_path / "bench_exchange.json").read_text())["n_atoms"] > 0
