"""The accuracy benchmark's smoke mode runs end to end (two epochs, tiny model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import shared_data

ROOT = Path(__file__).resolve().parents[2]


def test_bench_hamiltonian_smoke(tmp_path: Path) -> None:
    shared_data("deeptb_Si64", "Si64.0")
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_hamiltonian.py"),
        "--system",
        "si64",
        "--smoke",
        "--out",
        str(tmp_path),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    report = json.loads((tmp_path / "bench_hamiltonian_si64.json").read_text())
    assert report["smoke"] and report["n_atoms"] == 64
    assert report["gamma_ref"][1] == __import__("pytest").approx(6.5282, abs=1e-4)
    assert (tmp_path / "bench_hamiltonian_si64.png").stat().st_size > 1000
