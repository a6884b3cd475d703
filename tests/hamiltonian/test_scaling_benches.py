"""Smoke modes of the Hamiltonian memory, message-throughput and weak-scaling benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


_load = load_benchmark


def test_memory_smoke(tmp_path: Path) -> None:
    bench = _load("bench_hamiltonian_memory")
    bench.main(["--smoke", "--modes", "forward,train_ckpt", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "bench_hamiltonian_memory.json").read_text())
    assert report["smoke"] and not report["skipped"]
    assert {r["mode"] for r in report["rows"]} == {"forward", "train_ckpt"}
    assert all(r["edges"] > 0 and r["peak_gib"] > 0 for r in report["rows"])
    assert (tmp_path / "bench_hamiltonian_memory.png").stat().st_size > 1000


def test_throughput_smoke(tmp_path: Path) -> None:
    report = _load("bench_message_throughput").main(["--smoke", "--out", str(tmp_path)])
    assert {r["channels"] for r in report["rows"]} == {4, 8}
    assert all(r["messages_per_s"] > 0 for r in report["rows"])
    assert json.loads((tmp_path / "bench_message_throughput.json").read_text())["smoke"]
    assert (tmp_path / "bench_message_throughput.png").stat().st_size > 1000


def test_weak_scaling_smoke(tmp_path: Path) -> None:
    bench = _load("bench_weak_scaling")
    assert bench.tiling(8, 3) == (2, 2, 2) and bench.tiling(32, 3) == (4, 4, 2)
    assert bench.tiling(4, 1) == (4, 1, 1)
    report = bench.main(["--smoke", "--out", str(tmp_path)])
    rows = report["rows"]
    assert {r["method"] for r in rows} == {"lownn", "grid"}
    assert max(r["parts"] for r in rows) == 16
    # a 1-D chain of slabs has at most two neighbours per rank (Low-NN)
    one_d = [r for r in rows if r["dims"] == 1 and r["method"] == "lownn"]
    assert all(r["neighbours_max"] <= 2 for r in one_d)
    assert (tmp_path / "bench_weak_scaling.png").stat().st_size > 1000


def test_ranks_smoke(tmp_path: Path) -> None:
    """The 1- and 2-rank forward-pass benchmark runs end to end (as a script: its ranks
    import the rank function from ``__main__``)."""
    import subprocess
    import sys

    script = ROOT / "benchmarks" / "bench_hamiltonian_ranks.py"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "bench_hamiltonian_ranks.json").read_text())
    one, two = report["rows"]
    assert one["atoms"] == two["atoms"] == 30 and one["edges"] == two["edges"] > 0
    assert one["recomputed_reverse_edges"] == 0 < two["recomputed_reverse_edges"]
    assert (tmp_path / "bench_hamiltonian_ranks.png").stat().st_size > 1000
