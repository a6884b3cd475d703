"""The accuracy benchmark's smoke mode runs end to end (two epochs, tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench_scripts import load_benchmark
from tests.conftest import shared_data


def test_bench_hamiltonian_smoke(tmp_path: Path) -> None:
    shared_data("deeptb_Si64", "Si64.0")
    bench = load_benchmark("bench_hamiltonian")
    bench.main(["--system", "si64", "--smoke", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "bench_hamiltonian_si64.json").read_text())
    assert report["smoke"] and report["n_atoms"] == 64
    assert report["gamma_ref"][1] == pytest.approx(6.5282, abs=1e-4)
    assert (tmp_path / "bench_hamiltonian_si64.png").stat().st_size > 1000
