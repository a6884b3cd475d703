"""Smoke mode of benchmarks/bench_rebuild.py: runs, writes JSON and PNG, modes differ."""

from __future__ import annotations

import json

import pytest

from tests.distributed.test_benchmarks import _load

pytestmark = pytest.mark.distributed


def test_bench_rebuild_smoke(tmp_path):
    report = _load("bench_rebuild").main(["--smoke", "--out", str(tmp_path)])
    (world,) = report["worlds"]
    local, gather = world["modes"]
    assert local["local"] and not gather["local"]
    assert local["rebuild_s_median"] > 0 and gather["rebuild_s_median"] > 0
    assert sum(local["n_owned_per_rank"]) == report["n_atoms"]
    assert (tmp_path / "bench_rebuild.png").exists()
    assert json.loads((tmp_path / "bench_rebuild.json").read_text())["n_atoms"] == 36
