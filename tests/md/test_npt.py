"""NPT (MTK barostat + Nosé–Hoover chains): conserved energy, the right ensemble, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.lattice.cubic import FaceCenteredCubic

from atomshard.errors import InputError
from atomshard.md import MDConfig, Observer, maxwell_boltzmann, run_md, state_from_ase
from atomshard.md.ensemble import conserved_energy
from atomshard.models.pair import LennardJones
from atomshard.units import EV_PER_A3_TO_GPA, KB


def _npt(**kw):
    base = dict(
        ensemble="npt", steps=400, dt=2.0, temperature=60.0, pressure=0.05, tdamp=100.0,
        pdamp=400.0, output=None, block_atoms="off", seed=1,
    )  # fmt: skip
    return MDConfig(**{**base, **kw})


def _volume(state) -> float:
    return abs(float(torch.linalg.det(state.cell)))


@pytest.mark.parametrize("barostat", ["iso", "aniso", "tri"])
def test_extended_energy_is_conserved_while_the_cell_moves(argon, lj, barostat):
    atoms = argon.copy()
    if barostat == "tri":  # a triclinic start: the cell shears as well as stretches
        atoms.set_cell(atoms.cell.array @ [[1, 0.06, 0], [0, 1, -0.04], [0.03, 0, 1]], True)
    state = state_from_ase(atoms)
    maxwell_boltzmann(state, 60.0, seed=2)
    config = _npt(barostat=barostat)
    seen: dict[str, list] = {"conserved": [], "etot": [], "cell": []}

    def keep(s):
        seen["conserved"].append(conserved_energy(s, config))
        seen["etot"].append(s.energy + s.kinetic_energy())
        seen["cell"].append(s.cell.numpy().copy())

    run_md(config, model=lj, atoms=state.to_ase(), progress=False, observers=[Observer(keep)])
    conserved, etot = np.array(seen["conserved"]), np.array(seen["etot"])
    drift = np.ptp(conserved) / len(atoms)
    assert drift < 2e-5, f"{barostat}: extended energy drifts {drift:.2e} eV/atom"
    assert np.ptp(etot) > 20 * np.ptp(conserved)  # E_tot itself is not conserved in NPT
    cells = np.array(seen["cell"])
    change = np.abs(cells[-1] - cells[0])
    assert change.max() > 1e-3  # the cell moved
    if barostat == "iso":  # shape kept: every vector scaled by the same factor
        ratio = np.linalg.norm(cells[-1], axis=1) / np.linalg.norm(cells[0], axis=1)
        assert np.ptp(ratio) < 1e-12
    elif barostat == "aniso":  # an orthogonal cell stays orthogonal
        assert np.abs(cells[-1] - np.diag(np.diagonal(cells[-1]))).max() < 1e-12
    else:
        assert np.abs(cells[-1] - np.diag(np.diagonal(cells[-1]))).max() > 1e-3


@pytest.mark.slow
def test_mean_pressure_and_volume_fluctuations_match_the_potential():
    """<P> equals the target within its error bar, and <δV²> = k_B T V κ_T with κ_T from the
    slope of the NVT pressure between two volumes (a route that uses no fluctuations)."""
    lj = LennardJones(epsilon=0.0104, sigma=3.40, cutoff=8.0)
    base = FaceCenteredCubic("Ar", latticeconstant=5.40, size=(2, 2, 2))
    temperature = 60.0

    def sample(config, atoms):
        rows: list = []
        observer = Observer(lambda s: rows.append((_volume(s), s.pressure_gpa())), every=5)
        run_md(config, model=lj, atoms=atoms, progress=False, observers=[observer])
        return np.array(rows)[len(rows) // 5 :]  # equilibration dropped

    volumes, pressures = [], []
    for factor in (0.99, 1.01):
        atoms = base.copy()
        atoms.set_cell(atoms.cell.array * factor, scale_atoms=True)
        nvt = MDConfig(
            ensemble="nose-hoover", steps=4000, dt=5.0, temperature=temperature, tdamp=200.0,
            output=None, block_atoms="off", seed=3,
        )  # fmt: skip
        rows = sample(nvt, atoms)
        volumes.append(rows[0, 0])
        pressures.append(rows[:, 1].mean())
    kappa = -(volumes[1] - volumes[0]) / np.mean(volumes)
    kappa /= (pressures[1] - pressures[0]) / EV_PER_A3_TO_GPA  # 1/(eV/Å³)
    target = float(np.mean(pressures))
    npt = _npt(
        steps=12000, dt=5.0, temperature=temperature, pressure=target, tdamp=200.0, pdamp=300.0,
        seed=3,
    )  # fmt: skip
    rows = sample(npt, base)
    blocks = rows[: len(rows) // 20 * 20, 1].reshape(20, -1).mean(axis=1)
    error = blocks.std(ddof=1) / np.sqrt(len(blocks))
    assert abs(rows[:, 1].mean() - target) < 4 * error + 1e-4, (rows[:, 1].mean(), target, error)
    expected = KB * temperature * rows[:, 0].mean() * kappa
    assert 0.7 < rows[:, 0].var() / expected < 1.3, (rows[:, 0].var(), expected)


def test_bad_npt_input_is_a_one_line_error(argon, lj, tmp_path):
    cluster = argon.copy()
    cluster.pbc = False
    with pytest.raises(InputError, match="not periodic"):
        run_md(_npt(steps=2), model=lj, atoms=cluster, progress=False)
    for field, value in (("pressure", float("nan")), ("pdamp", -1.0), ("barostat", "xyz")):
        with pytest.raises(InputError, match=field):
            _npt(**{field: value})
    # a huge tension pulls the crystal apart: stopped with a clear error, restart intact
    config = _npt(steps=3000, pressure=-20.0, pdamp=100.0, output=str(tmp_path / "torn"))
    with pytest.raises(InputError, match="barostat is unstable"):
        run_md(config, model=lj, atoms=argon, progress=False)
    restart = torch.load(tmp_path / "torn" / "restart.pt", weights_only=True)
    assert restart["step"] % config.restart_every == 0
