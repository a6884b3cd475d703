"""A script launched by torchrun: the communicator comes from its environment variables."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
HERE = Path(__file__).resolve().parent


def test_calculator_under_torchrun(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun not installed")
    cmd = [
        torchrun,
        "--standalone",
        "--nproc-per-node",
        "2",
        str(HERE / "torchrun_calculator.py"),
        str(tmp_path / "result"),
    ]
    env = {"PYTHONPATH": str(HERE.parents[1]), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"result.{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in results] == [2, 2]
    assert results[0]["energy"] == results[1]["energy"]
    for r in results:
        assert r["energy_error"] <= 1e-10 and r["force_error"] <= 1e-10
