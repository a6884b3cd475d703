"""The runtime benchmarks' smoke modes run and write their JSON and PNG."""

from __future__ import annotations

import json

import pytest

from tests.bench_scripts import load_benchmark

pytestmark = pytest.mark.distributed


_load = load_benchmark


def test_bench_exchange_smoke(tmp_path):
    report = _load("bench_exchange").main(["--smoke", "--out", str(tmp_path)])
    rows = report["worlds"][0]["slowest_rank"]
    assert {r["transport"] for r in rows} == {"p2p", "all_to_all"}
    assert all(r["forward_s"] > 0 and r["backward_s"] > 0 for r in rows)
    assert (tmp_path / "bench_exchange.png").exists()
    assert json.loads((tmp_path / "bench_exchange.json").read_text())["n_atoms"] > 0


def test_bench_scaling_smoke(tmp_path):
    report = _load("bench_scaling").main(["--smoke", "--out", str(tmp_path)])
    one, two, two_off = report["worlds"]
    assert one["n_ranks"] == 1 and one["max_exchange_fraction"] == 0.0  # serial: no exchange
    for world, overlap in ((two, "on"), (two_off, "off")):
        assert world["n_ranks"] == 2 and world["overlap"] == overlap
        assert 0.0 < world["max_exchange_fraction"] < 1.0
        assert {r["rank"] for r in world["per_rank"]} == {0, 1}
        overlapped = [r["profile"]["overlapped_exchanges_per_step"] for r in world["per_rank"]]
        assert all((n > 0) == (overlap == "on") for n in overlapped), overlapped
    (hidden,) = report["hidden"]
    assert hidden["n_ranks"] == 2 and hidden["exchange_off_s"] > 0
    # every overlapped call of the "on" run is compared with the same call blocking
    n_calls = two["per_rank"][0]["profile"]["overlapped_exchanges_per_step"]
    assert hidden["n_overlapped_calls"] == n_calls and hidden["exposed_off_s"] > 0
    assert hidden["hidden_fraction"] <= 1.0
    assert (tmp_path / "bench_scaling.png").exists()


@pytest.mark.slow
def test_bench_hamiltonian_scaling_smoke(tmp_path):
    report = _load("bench_hamiltonian_scaling").main(["--smoke", "--out", str(tmp_path)])
    one, two = report["worlds"]
    assert one["n_ranks"] == 1 and one["max_send_recv_s"] == 0.0
    assert two["n_ranks"] == 2 and two["reverse_edge_fraction"] > 0
    assert sum(r["n_owned_edges"] for r in two["per_rank"]) == one["per_rank"][0]["n_owned_edges"]
    assert (tmp_path / "bench_hamiltonian_scaling.png").exists()
    assert json.loads((tmp_path / "bench_hamiltonian_scaling.json").read_text())["n_atoms"] == 64
