"""What production LAMMPS runs use, with pair_style atomshard: NVE with neighbour-list
rebuilds, velocity, fix momentum, a dump with forces and rerun (1 vs 2 ranks: the same
thermo), fix nvt (the temperature settles at its target, the thermostat's conserved
energy stays put; 1 vs 2 ranks: the same first steps), fix npt (the pressure moves to its
target) and minimize (cg)."""

from __future__ import annotations

import numpy as np
import pytest

from atomshard.io.structures import builtin_structure
from tests.lammps.lammps_cases import run_lammps, thermo_blocks, write_data

NVE = """units metal
atom_style atomic
atom_modify map array
read_data {data}
pair_style atomshard
pair_coeff * * {model} O Si
neighbor 0.5 bin
neigh_modify every 1 delay 0 check yes
timestep 0.0005
velocity all create 300 42 loop geom
fix 1 all nve
fix 2 all momentum 10 linear 1 1 1
thermo 10
thermo_style custom step pe ke etotal press pxy
thermo_modify format float %.17g
dump t all custom 10 traj.dump id type x y z fx fy fz
dump_modify t sort id format float %.17g
run 40
unfix 1
unfix 2
undump t
rerun traj.dump dump x y z
"""

NVT = """units metal
atom_style atomic
atom_modify map array
read_data {data}
pair_style atomshard
pair_coeff * * {model} O Si
neighbor 0.5 bin
timestep 0.001
velocity all create 100 42 loop geom
fix 1 all nvt temp 600 600 0.01
thermo 5
thermo_style custom step temp pe etotal econserve
thermo_modify format float %.17g
run {steps}
"""

NPT_MIN = """units metal
atom_style atomic
atom_modify map array
read_data {data}
pair_style atomshard
pair_coeff * * {model} O Si
timestep 0.001
velocity all create 300 42 loop geom
fix 1 all npt temp 300 300 0.05 iso 0 0 0.05
thermo 1
thermo_style custom step pe temp press vol fnorm
run 40
unfix 1
min_style cg
minimize 0 1e-6 15 1000
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("md")
    atoms = builtin_structure("quartz", (2, 2, 1))
    atoms.rattle(0.02, seed=7)
    write_data(folder / "q36.data", atoms, ("O", "Si"))
    return folder / "q36.data"


def _run(folder, text, ranks):
    done = run_lammps(folder, text, ranks)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return thermo_blocks((folder / "log.lammps").read_text())


def test_nve_same_thermo_on_1_and_2_ranks_and_rerun(plugin, exports, data, tmp_path):
    text = NVE.format(data=data, model=exports["nequip"])
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = _run(tmp_path / "one", text, 1)
    two = _run(tmp_path / "two", text, 2)
    md1, md2 = np.array(one[0]), np.array(two[0])
    assert md1.shape == (5, 6)
    scale = np.maximum(np.abs(md1), 1.0)
    assert np.max(np.abs(md1 - md2) / scale) < 1e-9  # the same trajectory, to reordering
    etot = md1[:, 3]
    assert np.ptp(etot) < 2e-3  # NVE conserves the total energy (dt 0.5 fs)
    assert np.ptp(md1[:, 1]) > 0.01  # ... while the potential energy changes
    for rerun in (np.array(one[1]), np.array(two[1])):  # rerun of the dumped frames
        assert np.allclose(rerun[:, 0], md1[:, 0])
        assert np.max(np.abs(rerun[:, 1] - md1[:, 1])) < 1e-9  # same pe from the dump


def test_nvt_on_2_ranks_settles_at_the_target(plugin, exports, data, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    text = NVT.format(data=data, model=exports["nequip"], steps=20)
    one = np.array(_run(tmp_path / "one", text, 1)[0])
    text = NVT.format(data=data, model=exports["nequip"], steps=80)
    two = np.array(_run(tmp_path / "two", text, 2)[0])
    assert one.shape == (5, 5) and two.shape == (17, 5)
    scale = np.maximum(np.abs(one), 1.0)
    assert np.max(np.abs(two[:5] - one) / scale) < 1e-9  # the same first 20 steps
    temp, etotal, conserved = two[:, 1], two[:, 3], two[:, 4]
    assert temp[0] == pytest.approx(100.0)
    assert abs(temp[8:].mean() - 600.0) < 0.15 * 600.0  # steps 40-80: at the target
    assert np.ptp(etotal) > 1.0  # the thermostat moves energy in and out ...
    assert np.ptp(conserved) < 1e-2  # ... and its conserved quantity stays put


def test_npt_and_minimize_on_2_ranks(plugin, exports, data, tmp_path):
    blocks = _run(tmp_path, NPT_MIN.format(data=data, model=exports["nequip"]), 2)
    npt, minim = np.array(blocks[0]), np.array(blocks[1])
    p0, pressure, volume = npt[0, 3], npt[:, 3], npt[:, 4]
    assert abs(p0) > 2e4  # far from the 0 bar target at the start
    assert abs(pressure[len(pressure) // 2 :].mean()) < 0.25 * abs(p0)
    assert np.ptp(volume) > 1.0  # the box moved
    pe = minim[:, 1]  # cg's line searches only ever lower the energy
    assert pe[-1] < pe[0] - 0.1 and np.all(np.diff(pe) <= 1e-8)


BALANCED = """units metal
atom_style atomic
atom_modify map array
{layout}
read_data {data}
pair_style atomshard
pair_coeff * * {model} O Si
neighbor 0.5 bin
neigh_modify every 1 delay 0 check yes
timestep 0.0005
velocity all create 600 42 loop geom
fix 1 all nve
{balance}
thermo 10
thermo_style custom step pe ke etotal press pxy
thermo_modify format float %.17g
run 40
"""


@pytest.mark.parametrize("newton", ["on", "off"])
def test_fix_balance_during_a_run_on_3_ranks(plugin, exports, tmp_path, newton):
    """``comm_style tiled`` with ``fix balance ... rcb`` re-cutting the subdomains every 5
    steps while the atoms move (3 uneven ranks): the trajectory of 1 rank, to 1e-9."""
    atoms = builtin_structure("quartz", (2, 2, 2))  # 10.8 Å along z: tiled needs > cutoff
    atoms.rattle(0.02, seed=9)
    data = tmp_path / "q72.data"
    write_data(data, atoms, ("O", "Si"))
    runs = {}
    for name, ranks, layout, balance in (
        ("one", 1, "", ""),
        ("three", 3, "comm_style tiled", "fix b all balance 5 1.0 rcb"),
    ):
        (tmp_path / name).mkdir()
        text = BALANCED.format(layout=layout, data=data, model=exports["nequip"], balance=balance)
        done = run_lammps(tmp_path / name, text, ranks, newton=newton)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs[name] = np.array(thermo_blocks((tmp_path / name / "log.lammps").read_text())[0])
    one, three = runs["one"], runs["three"]
    assert one.shape == (5, 6)
    scale = np.maximum(np.abs(one), 1.0)
    assert np.max(np.abs(one - three) / scale) < 1e-9
    assert np.ptp(one[:, 1]) > 0.01  # the atoms moved
