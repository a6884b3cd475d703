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


def test_halved_cuts_the_longest_even_factor():
    halved = load_benchmark("bench_lammps")._halved
    assert halved((8, 8, 8), [39.3, 39.3, 43.2]) == (8, 8, 4)
    assert halved((3, 4, 3), [10.0, 5.0, 20.0]) == (3, 2, 3)
    assert halved((3, 3, 3), [1.0, 1.0, 1.0]) is None


def test_bench_lammps_control_two_concurrent_halves(plugin, tmp_path):
    """--control: two 1-rank runs of half the structure at once, reported beside the
    2-rank run (the 2-process ceiling of the machine)."""
    argv = ["--repeat", "2x1x1", "--steps", "2", "--warmup", "1", "--rounds", "1"]
    report = load_benchmark("bench_lammps").main(
        [*argv, "--ranks", "1", "2", "--control", "--out", str(tmp_path)]
    )
    assert report["n_atoms"] == 18 and report["half_repeat"] == "1x1x1"
    assert report["half_pair_seconds_per_step"] > 0
    ceiling = report["seconds_per_step"]["lammps-1"] / (2 * report["half_pair_seconds_per_step"])
    assert abs(report["two_process_ceiling"] - ceiling) < 1e-12
    assert "lammps-half-pair" not in report["seconds_per_step"]
