"""benchmarks/bench_recipe.py --smoke: every schedule variant trains, its curve is read
from metrics.csv, and the table, JSON and plot are written."""

from __future__ import annotations

import json

import pytest

from tests.bench_scripts import load_benchmark


@pytest.mark.needs_shared_data
def test_bench_recipe_smoke(tmp_path):
    module = load_benchmark("bench_recipe")
    report = module.main(["--smoke", "--out", str(tmp_path)])
    rows = {row["variant"]: row for row in report["table"]}
    assert set(rows) == set(module.VARIANTS)
    for variant, curve in report["curves"].items():
        assert len(curve) == 4, variant  # the same epoch budget for every variant
        assert all(r["energy_mae"] > 0 and r["force_mae"] > 0 for r in curve)
        assert [r["seconds"] for r in curve] == sorted(r["seconds"] for r in curve)
    # the schedules differ where they should: cosine ends at min_lr, stage 2 runs last
    assert report["curves"]["cosine"][-1]["lr"] < report["curves"]["plateau"][-1]["lr"]
    assert report["curves"]["warmup-cosine"][0]["lr"] < report["curves"]["cosine"][0]["lr"]
    assert [r["stage"] for r in report["curves"]["plateau-stage2"]] == [1, 1, 1, 2]
    assert rows["plateau"]["reaches_plateau_final_s"] is not None
    assert rows["plateau"]["reaches_plateau_final_epoch"] <= 4
    saved = json.loads((tmp_path / "bench_recipe.json").read_text())
    assert saved["epochs"] == 4 and (tmp_path / "bench_recipe.png").is_file()
    # the table again from the saved curves, without training
    again = module.main(
        ["--table-from", str(tmp_path / "bench_recipe.json"), "--out", str(tmp_path / "again")]
    )
    assert again["table"] == report["table"]
    assert (tmp_path / "again" / "bench_recipe.png").is_file()
