"""benchmarks/bench_lammps.py --smoke runs and writes its JSON and PNG."""

from __future__ import annotations

from tests.bench_scripts import load_benchmark


def test_bench_lammps_smoke(plugin, tmp_path):
    report = load_benchmark("bench_lammps").main(["--smoke", "--out", str(tmp_path)])
    assert report["n_atoms"] == 9
    assert set(report["seconds_per_step"]) == {"lammps-1", "atomshard-1"}
    assert all(t > 0 for t in report["seconds_per_step"].values())
    assert set(report["cpu_seconds_per_step"]) == {"lammps-1", "atomshard-1"}
    assert all(t > 0 for t in report["cpu_seconds_per_step"].values())
    assert (tmp_path / "bench_lammps.json").is_file() and (tmp_path / "bench_lammps.png").is_file()
