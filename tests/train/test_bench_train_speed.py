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


def test_merge_curves_reach_table(tmp_path):
    """Curves of separate runs merge into one file and plot; the reach table gives the CPU
    time at which a code first has both the reference's last E and F MAE (or None)."""
    bench = load_benchmark("bench_train_speed")

    def run(impl, dataset, rows):
        curve = [{"cpu_s": t, "energy_mae": e, "force_mae": f} for t, e, f in rows]
        return {"impl": impl, "dataset": dataset, "curve": curve}

    parts = {
        "nequip": [run("nequip", "water", [(100, 0.05, 0.3), (3600, 0.004, 0.09)])],
        "atomshard": [
            # energy low enough at 300 s, forces only at 900 s
            run(
                "atomshard", "water", [(300, 0.003, 0.10), (900, 0.004, 0.08), (1800, 0.002, 0.05)]
            ),
            run("atomshard", "bulk", [(10, 0.1, 0.2)]),  # no nequip curve: no row
        ],
    }
    paths = []
    for name, runs in parts.items():
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "curves.json")
        paths[-1].write_text(json.dumps({"curve_s": 1.0, "runs": runs}))
    out = bench.main(["--merge-curves", *map(str, paths), "--out", str(tmp_path / "merged")])
    reach = {r["impl"]: r for r in out["reach"]}
    assert set(reach) == {"nequip", "atomshard"}
    assert reach["atomshard"]["reaches_reference_at_cpu_s"] == 900
    assert reach["nequip"]["reaches_reference_at_cpu_s"] == 3600
    saved = json.loads((tmp_path / "merged" / "curves.json").read_text())
    assert len(saved["runs"]) == 3 and saved["reach"] == out["reach"]
    assert (tmp_path / "merged" / "curves.png").is_file()
    # a code that never gets there says so with None
    parts["atomshard"][0]["curve"] = parts["atomshard"][0]["curve"][:1]
    assert (
        bench.reach_times(parts["nequip"] + parts["atomshard"])[1]["reaches_reference_at_cpu_s"]
        is None
    )
