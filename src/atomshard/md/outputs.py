"""MD outputs: extxyz trajectory, CSV thermo log, PNG plot. Appended, flushed, resumable."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import torch

from atomshard.md.state import MDState

THERMO_COLUMNS = (
    "step",
    "time_fs",
    "epot_eV",
    "ekin_eV",
    "etot_eV",
    "conserved_eV",
    "temperature_K",
    "pressure_GPa",
    "volume_A3",
    "a_A",
    "b_A",
    "c_A",
)


class AppendLog:
    """A text file written by appending; :meth:`offset` and :meth:`truncate` make it resumable."""

    def __init__(self, path: Path, *, header: str | None = None, resume_at: int | None = None):
        self.path = path
        if resume_at is not None:
            with open(path, "r+b") as handle:
                handle.truncate(resume_at)
            self.handle = open(path, "a", encoding="utf-8")
        else:
            self.handle = open(path, "w", encoding="utf-8")
            if header is not None:
                self.handle.write(header)
        self.flush()

    def write(self, text: str) -> None:
        self.handle.write(text)

    def flush(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def offset(self) -> int:
        self.flush()
        return self.handle.tell()

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.close()


def open_logs(out: Path, offsets: dict[str, int] | None) -> tuple[AppendLog, AppendLog]:
    """``(trajectory, thermo)`` logs in ``out``: new, or cut back to ``offsets`` on resume."""
    traj = AppendLog(
        out / "trajectory.extxyz", resume_at=offsets["trajectory"] if offsets else None
    )
    thermo = AppendLog(
        out / "thermo.csv",
        header=",".join(THERMO_COLUMNS) + "\n",
        resume_at=offsets["thermo"] if offsets else None,
    )
    return traj, thermo


def thermo_row(state: MDState, conserved: float) -> str:
    ekin = state.kinetic_energy()
    pressure = state.pressure_gpa()
    values = [
        str(state.step),
        f"{state.time:.6f}",
        f"{state.energy:.10f}",
        f"{ekin:.10f}",
        f"{state.energy + ekin:.10f}",
        f"{conserved:.10f}",
        f"{state.temperature():.6f}",
        "" if pressure is None else f"{pressure:.6f}",
    ]
    if bool(state.pbc.all()):
        cell = state.cell.detach().cpu().double()
        values.append(f"{abs(float(torch.linalg.det(cell))):.6f}")
        values.extend(f"{float(length):.6f}" for length in torch.linalg.vector_norm(cell, dim=1))
    else:
        values.extend([""] * 4)
    return ",".join(values) + "\n"


def extxyz_frame(state: MDState) -> str:
    """One extxyz frame with energy, stress, forces and velocities (Å/fs in ``velocities``)."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = state.to_ase()
    results: dict = {"energy": state.energy, "forces": state.forces.cpu().numpy()}
    if state.stress is not None:
        results["stress"] = state.stress.cpu().numpy()
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info["step"] = state.step
    atoms.info["time_fs"] = state.time
    buffer = io.StringIO()
    ase.io.write(buffer, atoms, format="extxyz")
    return buffer.getvalue()


def read_thermo(path: str | Path) -> dict[str, np.ndarray]:
    """The thermo CSV as columns (empty cells, and columns an older file lacks, are NaN)."""
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {c: np.array([float(r.get(c) or "nan") for r in rows]) for c in THERMO_COLUMNS}


def plot_thermo(csv_path: str | Path, png_path: str | Path, *, title: str = "") -> None:
    """Energies (and the conserved quantity) and temperature against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atomshard.utils.files import atomic_write

    data = read_thermo(csv_path)
    t = data["time_fs"]
    n = max(len(t), 1)
    volume = data["volume_A3"]
    barostat = len(t) > 1 and bool(np.isfinite(volume).all()) and np.ptp(volume) > 0
    rows = 3 if barostat else 2
    fig, axes = plt.subplots(rows, 1, figsize=(7, 3 * rows), sharex=True)
    ax_e, ax_t = axes[0], axes[1]
    e0 = data["etot_eV"][0] if len(t) else 0.0
    ax_e.plot(t, data["epot_eV"] - e0, label="E_pot")
    ax_e.plot(t, data["ekin_eV"], label="E_kin")
    ax_e.plot(t, data["etot_eV"] - e0, label="E_tot")
    if not np.allclose(data["conserved_eV"], data["etot_eV"]):
        ax_e.plot(
            t,
            data["conserved_eV"] - data["conserved_eV"][0] + data["etot_eV"][0] - e0,
            "--",
            label="conserved",
        )
    ax_e.set_ylabel(f"energy - E_tot(0) [eV], {n} rows")
    ax_e.legend(loc="best")
    ax_t.plot(t, data["temperature_K"], color="tab:red")
    ax_t.set_ylabel("temperature [K]")
    if barostat:  # NPT: volume, and the instantaneous pressure on a second axis
        ax_v = axes[2]
        ax_v.plot(t, volume, color="tab:green")
        ax_v.set_ylabel("volume [Å³]")
        ax_p = ax_v.twinx()
        ax_p.plot(t, data["pressure_GPa"], color="tab:gray", lw=0.6, alpha=0.7)
        ax_p.set_ylabel("pressure [GPa]")
    axes[-1].set_xlabel("time [fs]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(png_path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
