"""``atomshard partition`` end to end, and the benchmark's smoke mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atomshard.cli import main
from atomshard.partition import HaloPlan, build_halo_plans, check_plans
from tests.bench_scripts import load_benchmark


def test_partition_command_writes_report_plots_and_plans(tmp_path, capsys):
    from ase.build import bulk

    path = tmp_path / "si.xyz"
    bulk("Si", "diamond", a=5.431, cubic=True).repeat((3, 3, 3)).write(path)
    out = tmp_path / "out"
    code = main(
        [
            "partition",
            str(path),
            "--cutoff",
            "4.0",
            "--parts",
            "6",
            "--method",
            "all",
            "--json",
            str(out / "r.json"),
            "--plots",
            str(out),
            "--save-plans",
            str(out / "plans"),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "lownn" in text and "metis" in text and "grid" in text
    report = json.loads((out / "r.json").read_text())
    assert report["format"] == "atomshard.partition_report" and report["version"] == 1
    assert report["structure"]["n_atoms"] == 216 and report["n_parts"] == 6
    for name in ("lownn", "metis", "grid"):
        entry = report["methods"][name]
        assert len(entry["part"]) == 216 and len(entry["parts"]["halo_rows"]) == 6
        assert entry["owned_edges"]["total"] == report["n_edges"]
    # figures: one method keeps the test fast (matplotlib dominates its time)
    assert (
        main(
            [
                "partition",
                str(path),
                "--cutoff",
                "4.0",
                "--parts",
                "6",
                "--method",
                "grid",
                "--plots",
                str(out),
            ]
        )
        == 0
    )
    for name in ("parts_grid", "topology_grid", "methods"):
        assert (out / f"{name}.png").stat().st_size > 1000
    plans = [HaloPlan.load(out / "plans" / f"plan_{r:05d}.npz") for r in range(6)]
    part = np.array(report["methods"][report["best"]]["part"])
    from ase.io import read

    from atomshard.graph import neighbor_list

    atoms = read(path)
    src, dst, shifts = neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, cutoff=4.0)
    check_plans(plans, src, dst, 216, part, shifts)
    again = build_halo_plans(src, dst, shifts, 216, part, 6)
    assert [p.to_dict() for p in again] == [p.to_dict() for p in plans]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["si", "--cutoff", "4", "--parts", "0"], "--parts must be >= 1"),
        (["si", "--cutoff", "0", "--parts", "2"], "--cutoff must be positive"),
        (["nonexistent.xyz", "--cutoff", "4", "--parts", "2"], "does not exist"),
    ],
)
def test_partition_command_bad_input(argv, message, capsys):
    assert main(["partition", *argv]) == 2
    assert message in capsys.readouterr().err


def test_partition_command_more_parts_than_atoms(capsys):
    assert main(["partition", "si", "--cutoff", "3", "--parts", "12", "--method", "lownn"]) == 0
    assert "4 parts will be empty" in capsys.readouterr().out


def test_benchmark_smoke(tmp_path):
    module = load_benchmark("bench_partition")
    report = module.main(["--smoke", "--out", str(tmp_path)])
    assert {r["method"] for r in report["runs"]} == {"lownn", "metis", "grid"}
    assert (tmp_path / "bench_partition.png").exists()
    assert json.loads((tmp_path / "bench_partition.json").read_text())["n_atoms"] == 300
