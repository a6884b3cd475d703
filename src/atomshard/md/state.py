"""The MD state: what an integrator carries from one step to the next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from atomshard.errors import InputError
from atomshard.units import EV_PER_A3_TO_GPA, KB, MVV2E


@dataclass
class MDState:
    """Positions, velocities and everything else an integrator needs.

    Scope of each field: *per atom* fields have one row per atom this process holds;
    *global* fields are the same on every process.

    Shapes and units:
        positions: per atom ``[n, 3]`` float64, Å (not wrapped into the cell)
        velocities: per atom ``[n, 3]`` float64, Å/fs
        masses: per atom ``[n]`` float64, amu
        species: per atom ``[n]`` int64, atomic numbers
        atom_ids: per atom ``[n]`` int64, global index of each atom (noise keys, output order)
        forces: per atom ``[n, 3]`` float64, eV/Å
        cell: global ``[3, 3]`` float64, Å; pbc: global ``[3]`` bool
        energy: global potential energy, eV
        stress: global ``[3, 3]`` eV/Å³ (ASE sign), or None for non-periodic systems
        step: global step counter; time: global, fs
        thermostat: global extra variables of the ensemble (e.g. Nosé–Hoover chain)
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    masses: torch.Tensor
    species: torch.Tensor
    atom_ids: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    forces: torch.Tensor
    energy: float = 0.0
    stress: torch.Tensor | None = None
    step: int = 0
    time: float = 0.0
    thermostat: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    def kinetic_energy(self) -> float:
        """Kinetic energy in eV."""
        v2 = (self.velocities * self.velocities).sum(dim=1)
        return float(0.5 * MVV2E * (self.masses * v2).sum())

    def sum_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks that hold the system (itself serially).

        Integrators and minimisers use it for global sums of per-atom quantities (the
        kinetic-energy tensor, F·v, |F|²), so the same code runs on every rank.
        """
        return values

    def max_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum over the ranks (itself serially)."""
        return values

    def n_dof(self) -> int:
        """Degrees of freedom used for temperature: ``3 n_atoms`` (as ASE reports)."""
        return 3 * self.n_atoms

    def temperature(self) -> float:
        """Instantaneous kinetic temperature in K."""
        return 2.0 * self.kinetic_energy() / (self.n_dof() * KB)

    def pressure_gpa(self) -> float | None:
        """Instantaneous pressure (kinetic + virial) in GPa, or None when not periodic."""
        if self.stress is None or not bool(self.pbc.all()):
            return None
        volume = abs(float(torch.linalg.det(self.cell)))
        p = 2.0 * self.kinetic_energy() / (3.0 * volume) - float(torch.trace(self.stress)) / 3.0
        return p * EV_PER_A3_TO_GPA

    def to_ase(self):
        """An :class:`ase.Atoms` of the current configuration (velocities included)."""
        import ase
        from ase import units

        atoms = ase.Atoms(
            numbers=self.species.cpu().numpy(),
            positions=self.positions.detach().cpu().numpy(),
            cell=self.cell.cpu().numpy(),
            pbc=self.pbc.cpu().numpy(),
            masses=self.masses.cpu().numpy(),
        )
        # ASE velocities are in Å / (ASE time unit); 1 fs = units.fs ASE time units.
        atoms.set_velocities(self.velocities.cpu().numpy() / units.fs)
        return atoms


class ForceField(Protocol):
    """Anything that fills ``forces``, ``energy`` and ``stress`` of a state."""

    def __call__(self, state: MDState) -> None: ...


def state_from_ase(atoms, *, device: torch.device | str = "cpu") -> MDState:
    """An :class:`MDState` of ``atoms`` (velocities taken from ``atoms``; masses in amu)."""
    from ase import units

    masses = np.asarray(atoms.get_masses(), dtype=np.float64)
    if (masses <= 0).any():
        i = int(np.flatnonzero(masses <= 0)[0])
        raise InputError(f"atom {i} has a non-positive mass {masses[i]}")
    n = len(atoms)
    t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)  # noqa: E731
    return MDState(
        positions=t(atoms.get_positions(), torch.float64),
        velocities=t(atoms.get_velocities() * units.fs, torch.float64),
        masses=t(masses, torch.float64),
        species=t(atoms.get_atomic_numbers(), torch.int64),
        atom_ids=torch.arange(n, dtype=torch.int64, device=device),
        cell=t(atoms.get_cell().array, torch.float64),
        pbc=t(atoms.get_pbc(), torch.bool),
        forces=torch.zeros(n, 3, dtype=torch.float64, device=device),
    )


def maxwell_boltzmann(state: MDState, temperature: float, *, seed: int) -> None:
    """Draw velocities at ``temperature`` K, remove centre-of-mass motion, rescale to it exactly.

    The draw is counter-based (:func:`atomshard.md.noise.gaussian_noise`), so it does not
    depend on how atoms are distributed.
    """
    from atomshard.md.noise import gaussian_noise

    if temperature < 0:
        raise InputError(f"temperature must be >= 0 K, got {temperature}")
    if temperature == 0 or state.n_atoms == 0:
        state.velocities.zero_()
        return
    xi = torch.as_tensor(
        gaussian_noise(seed, 2**62, state.atom_ids.cpu().numpy()),
        dtype=torch.float64,
        device=state.positions.device,
    )
    sigma = torch.sqrt(KB * temperature / (state.masses * MVV2E))
    v = xi * sigma[:, None]
    if state.n_atoms > 1:
        p = (state.masses[:, None] * v).sum(0)
        v = v - p / state.masses.sum()
    state.velocities = v
    current = state.temperature()
    if current > 0:
        state.velocities = v * float(np.sqrt(temperature / current))
