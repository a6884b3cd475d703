"""The training benchmark's smoke mode runs and writes its JSON and PNG."""

from __future__ import annotations

import json

import pytest

from tests.bench_scripts import load_benchmark


@pytest.mark.slow
@pytest.mark.distributed
def test_bench_train_smoke(tmp_path):
    module = load_benchmark("bench_train")
    report = module.main(["--smoke", "--out", str(tmp_path)])
    runs = report["runs"]
    assert runs["2 ranks allreduce rerun"]["vs_base"]["max"] == 0.0  # CPU gloo: deterministic
    assert runs["2 ranks ddp"]["vs_base"]["max"] < 1e-5
    assert runs["2 ranks allreduce seed 1"]["vs_base"]["max"] > 1e-4
    assert all(r["structures_per_s"] > 0 for r in runs.values())
    assert 0 < runs["1 rank bfloat16"]["vs_float32"]["max"] < 0.1 * max(runs["1 rank"]["loss"])
    assert (tmp_path / "bench_train.png").is_file()
    assert json.loads((tmp_path / "bench_train.json").read_text())["steps"] == 2
