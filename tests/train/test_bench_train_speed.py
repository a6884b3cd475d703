"""The training-throughput benchmark's data-parallel smoke run (atomshard and nequip on 2
ranks) completes and writes its JSON and PNG."""

from __future__ import annotations

import json

import pytest

from tests.bench_scripts import load_benchmark


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.needs_shared_data
def test_bench_train_speed_ddp_smoke(tmp_path):
    pytest.importorskip("nequip")
    module = load_benchmark("bench_train_speed")
    report = module.main(["--ddp", "--smoke", "--datasets", "water", "--out", str(tmp_path)])
    rows = {row["impl"]: row for row in report["table"]}
    assert set(rows) == {"atomshard", "nequip"}
    for row in rows.values():
        assert row["error"] is None, row["error"]
        assert row["atoms_per_s"] > 0 and row["atoms_per_cpu_s"] > 0 and row["ranks"] == 2
    for run in report["runs"]["atomshard|water"] + report["runs"]["nequip|water"]:
        assert len(run["peak_rss_mb_per_rank"]) == 2 and len(run["last_loss"]) == 2
    saved = json.loads((tmp_path / "bench_train_ddp.json").read_text())
    assert saved["ranks"] == 2 and saved["batch_size_per_rank"] == 4
    assert (tmp_path / "bench_train_ddp.png").is_file()


@pytest.mark.needs_shared_data
def test_bench_train_speed_serial_smoke(tmp_path):
    """The one-process rows (the shared epoch-timing loop of the workers): every row
    times its epochs and reports throughput and memory."""
    pytest.importorskip("nequip")
    module = load_benchmark("bench_train_speed")
    report = module.main(["--smoke", "--datasets", "water", "--impls", "atomshard", "nequip",
                          "--out", str(tmp_path)])  # fmt: skip
    rows = {row["impl"]: row for row in report["table"]}
    assert set(rows) == {"atomshard", "nequip"}
    for row in rows.values():
        assert row["error"] is None, row["error"]
        assert row["atoms_per_s"] > 0 and row["atoms_per_cpu_s"] > 0 and row["peak_rss_mb"] > 0
