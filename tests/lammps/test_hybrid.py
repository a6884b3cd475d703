"""pair_style hybrid/overlay with atomshard: the model beside a classical term (ZBL, as
SevenNet and NequIP users add a short-range repulsion or a D3 correction) gives the sum of
the two styles' energies, per-atom energies, forces and virial, on 1 and 2 ranks, and
``compute pair atomshard`` the model's part alone (float64, 1e-10)."""

from __future__ import annotations

import numpy as np
import pytest

from atomshard.lammps.export import load_export
from tests.lammps.lammps_cases import (
    cells,
    lammps_result,
    read_dump,
    reference,
    rel,
    run_lammps,
    thermo_blocks,
    write_data,
)

#: Si-O bonds in quartz are 1.6 Å: ZBL switched off between 2.0 and 2.5 Å acts on them
ZBL = {"zbl 2.0 2.5": ["1 1 zbl 8 8", "1 2 zbl 8 14", "2 2 zbl 14 14"]}


def _evaluation(data, style: str, coeffs: list[str], computes: str = "") -> str:
    sa = " ".join(f"c_sa[{k}]" for k in range(1, 7))
    pv = " ".join(f"c_pv[{k}]" for k in range(1, 7))
    lines = "\n".join(f"pair_coeff {c}" for c in coeffs)
    extra = f" {computes}" if computes else ""
    return f"""clear
units metal
atom_style atomic
atom_modify map array
read_data {data}
pair_style {style}
{lines}
compute pv all pressure NULL virial
compute pe all pe/atom
compute sa all stress/atom NULL virial
{"compute pa all pair atomshard" if computes else ""}
thermo_style custom step pe vol {pv}{extra}
thermo_modify format float %.17g
dump d all custom 1 {data.with_suffix(f".{len(coeffs)}.dump")} id fx fy fz c_pe {sa}
dump_modify d sort id format float %.17g
run 0
undump d
"""


@pytest.mark.parametrize("ranks", [1, 2])
def test_hybrid_overlay_adds_the_styles(plugin, exports, tmp_path, ranks):
    atoms = cells()["triclinic"].atoms
    data = tmp_path / "structure.data"
    atoms = write_data(data, atoms, ("O", "Si"))
    model = exports["nequip"]
    ((zbl_style, zbl_coeffs),) = ZBL.items()
    hybrid = f"hybrid/overlay atomshard {zbl_style}"
    text = _evaluation(
        data,
        hybrid,
        [f"* * atomshard {model} O Si", *zbl_coeffs],
        computes="c_pa",
    ) + _evaluation(data, zbl_style, [c.replace(" zbl", "") for c in zbl_coeffs])
    proc = run_lammps(tmp_path, text, ranks)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    blocks = thermo_blocks(proc.stdout)
    row_h, row_z = blocks[0][0], blocks[1][0]
    dump_h = read_dump(data.with_suffix(f".{1 + len(zbl_coeffs)}.dump"))
    dump_z = read_dump(data.with_suffix(f".{len(zbl_coeffs)}.dump"))
    both = lammps_result(row_h[:-1], dump_h)
    zbl = lammps_result(row_z, dump_z)
    ref = reference(load_export(model)[0], atoms)
    assert abs(zbl.energy) > 1e-3  # the classical term is not nothing here
    assert rel(both.energy, ref.energy + zbl.energy) < 1e-10
    assert rel(row_h[-1], ref.energy) < 1e-10  # compute pair atomshard: the model alone
    np.testing.assert_allclose(both.forces, ref.forces + zbl.forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(both.energies, ref.energies + zbl.energies, rtol=0, atol=1e-10)
    scale = np.abs(ref.virial).max()
    np.testing.assert_allclose(both.virial, ref.virial + zbl.virial, rtol=0, atol=1e-10 * scale)


def test_plain_hybrid_taking_type_pairs_away_is_refused(plugin, exports, tmp_path):
    """Plain ``hybrid`` with another sub-style on some type pairs would hide those pairs
    from the model: one LAMMPS error saying to use hybrid/overlay, not wrong numbers."""
    data = tmp_path / "structure.data"
    write_data(data, cells()["triclinic"].atoms, ("O", "Si"))
    text = _evaluation(
        data,
        "hybrid atomshard zbl 2.0 2.5",
        [f"* * atomshard {exports['nequip']} O Si", "1 1 zbl 8 8"],
    )
    proc = run_lammps(tmp_path, text, 1)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "every type pair must stay with atomshard" in out and "hybrid/overlay" in out
