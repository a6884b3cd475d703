"""A failure on one MPI rank only stops every rank with the error, never a hang.

The failure is injected into the embedded interpreter of rank 1 by a ``sitecustomize``
module on PYTHONPATH (the plugin's interpreter imports it at start): while loading the
model in ``pair_coeff``, or inside the model between two per-layer ghost exchanges, when
rank 0 already waits in LAMMPS's forward communication for rank 1."""

from __future__ import annotations

import pytest

from tests.lammps.lammps_cases import cells, run_lammps, write_data

SITECUSTOMIZE = """
import os

if os.environ.get("PMI_RANK") == "1":
    import atomshard.lammps.bridge as bridge

    where = os.environ["ATOMSHARD_TEST_FAIL"]
    if where == "load":
        def load(*args):
            raise RuntimeError("injected load failure on rank 1")

        bridge.load = load
    else:
        call, calls = bridge.LammpsExchange.__call__, []

        def exchange(self, x):
            calls.append(1)
            if len(calls) == 2:  # the second layer's exchange of the first step
                raise RuntimeError("injected model failure on rank 1")
            return call(self, x)

        bridge.LammpsExchange.__call__ = exchange
"""


@pytest.mark.parametrize("where", ["load", "exchange"])
def test_failure_on_one_rank_stops_all_ranks(plugin, exports, tmp_path, monkeypatch, where):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(inject))
    monkeypatch.setenv("ATOMSHARD_TEST_FAIL", where)
    data = tmp_path / "tiny.data"
    write_data(data, cells()["tiny"].atoms, ("O", "Si"))
    lines = ["units metal", "atom_style atomic", f"read_data {data}", "pair_style atomshard"]
    text = "\n".join([*lines, f"pair_coeff * * {exports['nequip']} O Si", "run 2", ""])
    done = run_lammps(tmp_path, text, 2, timeout=180)  # a hang fails by TimeoutExpired
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-2000:]
    if where == "load":  # the ranks agree, and rank 0 reports rank 1's message
        assert ("ERROR: pair atomshard: loading the model failed on 1 of 2 ranks (rank 1: "
                "RuntimeError: injected load failure on rank 1)") in out  # fmt: skip
    else:  # the others wait in a communication: rank 1 alone stops the run
        assert "ERROR on proc 1: pair atomshard: RuntimeError: injected model failure" in out
    assert "Segmentation" not in out and "Traceback" not in out
