"""The MD run configuration: a frozen dataclass that is also the YAML schema."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from atomshard.errors import InputError
from atomshard.utils.config import config_from_dict, config_to_dict

#: MD ensembles (``MINIMIZERS`` are run by the same driver and config)
ENSEMBLES = ("nve", "langevin", "nose-hoover", "npt")
#: energy minimisers
MINIMIZERS: tuple[str, ...] = ("fire", "cg")
#: how a barostat (or a cell minimiser) moves the cell
CELL_MODES = ("iso", "aniso", "tri")


@dataclass(frozen=True, kw_only=True)
class MDConfig:
    """Everything that defines an MD run (units: fs, K, Å).

    Attributes:
        structure: a structure file (first frame is used) or a built-in name.
        repeat: supercell repetitions along a, b, c.
        model: ``--model`` string (checkpoint path, ``sevennet-0``, ``n2p2:FOLDER``).
        ensemble: ``nve``, ``langevin``, ``nose-hoover`` or ``npt`` (MTK barostat with
            Nosé–Hoover chains on the atoms and on the cell).
        steps: total number of steps of the run (a resumed run continues up to it).
        dt: timestep, fs.
        temperature: thermostat target, K (also the initial velocity temperature unless
            ``init_temperature`` is given).
        init_temperature: Maxwell–Boltzmann temperature of the initial velocities, K
            (velocities in the structure file are kept when it is ``None`` and they are
            non-zero).
        friction: Langevin friction, 1/fs.
        tdamp: Nosé–Hoover damping time, fs; chain: its chain length.
        pressure: target pressure of ``npt`` (and of a cell minimisation), GPa.
        pdamp: barostat damping time, fs.
        barostat: how the cell moves: ``iso`` (volume only, shape kept), ``aniso`` (the
            three lattice-vector lengths independently, angles kept for an orthogonal
            cell) or ``tri`` (all six strain components: fully flexible, triclinic).
        fmax: minimisers stop when every force is below this, eV/Å.
        etol: minimisers also stop when the relative energy change of an iteration is
            below this (0 disables).
        min_cell: a minimiser also relaxes the cell (``iso``, ``aniso``, ``tri``) under
            ``pressure``; ``none`` keeps it.
        seed: seeds initial velocities and Langevin noise.
        skin: neighbour-list skin, Å (rebuild when an atom moved more than skin/2).
        zero_momentum: remove the centre-of-mass momentum every this many steps (and the
            angular momentum when no axis is periodic); 0 never.
        traj_every, log_every, restart_every: output intervals in steps (0 disables).
        output: output folder; None (Python only) writes no files at all.
        dtype: network body dtype override (``float32``/``float64``), or None for the model's.
        device: ``cpu`` or ``cuda``.
        block_atoms: the most atoms (halo included) one force evaluation holds at once;
            larger systems are evaluated exactly, block by block. ``auto`` picks it from
            the free memory, ``off`` never splits.
    """

    structure: str = "quartz"
    repeat: tuple[int, int, int] = (1, 1, 1)
    model: str = "sevennet-0"
    ensemble: str = "langevin"
    steps: int = 100
    dt: float = 1.0
    temperature: float = 300.0
    init_temperature: float | None = None
    friction: float = 0.02
    tdamp: float = 100.0
    chain: int = 3
    pressure: float = 0.0
    pdamp: float = 1000.0
    barostat: str = "iso"
    fmax: float = 0.01
    etol: float = 0.0
    min_cell: str = "none"
    seed: int = 0
    skin: float = 1.0
    zero_momentum: int = 0
    traj_every: int = 10
    log_every: int = 1
    restart_every: int = 50
    output: str | None = "atomshard-md"
    dtype: str | None = None
    device: str = "cpu"
    block_atoms: int | str = "auto"

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> InputError:
            return InputError(f"md config: {name} = {getattr(self, name)!r}: {why}")

        for name in ("dt", "temperature", "friction", "tdamp", "skin"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, "must be a finite number")
        if self.ensemble not in ENSEMBLES + MINIMIZERS:
            raise bad("ensemble", f"must be one of {', '.join(ENSEMBLES + MINIMIZERS)}")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise bad("steps", "must be a non-negative integer")
        if not self.dt > 0:
            raise bad("dt", "the timestep must be positive (fs)")
        if self.dt > 20:
            raise bad("dt", "is larger than 20 fs; atomic MD needs ~0.5-2 fs")
        if self.temperature < 0:
            raise bad("temperature", "must be >= 0 K")
        if self.init_temperature is not None and self.init_temperature < 0:
            raise bad("init_temperature", "must be >= 0 K")
        if self.ensemble in ("nose-hoover", "npt") and not self.temperature > 0:
            raise bad("temperature", f"{self.ensemble} needs a positive temperature")
        if not math.isfinite(self.pressure):
            raise bad("pressure", "must be a finite number (GPa)")
        if not self.pdamp > 0 or not math.isfinite(self.pdamp):
            raise bad("pdamp", "must be positive (fs)")
        if self.barostat not in CELL_MODES:
            raise bad("barostat", f"must be one of {', '.join(CELL_MODES)}")
        if self.min_cell not in ("none", *CELL_MODES):
            raise bad("min_cell", f"must be none or one of {', '.join(CELL_MODES)}")
        if not self.fmax > 0 or not math.isfinite(self.fmax):
            raise bad("fmax", "must be positive (eV/Å)")
        if not self.etol >= 0 or not math.isfinite(self.etol):
            raise bad("etol", "must be >= 0 (0 disables)")
        if self.friction < 0:
            raise bad("friction", "must be >= 0 (1/fs)")
        if not self.tdamp > 0:
            raise bad("tdamp", "must be positive (fs)")
        if self.chain < 1:
            raise bad("chain", "must be >= 1")
        if self.skin < 0:
            raise bad("skin", "must be >= 0 Å")
        if len(self.repeat) != 3 or any(int(r) < 1 for r in self.repeat):
            raise bad("repeat", "must be three positive integers")
        if isinstance(self.zero_momentum, bool) or not isinstance(self.zero_momentum, int):
            raise bad("zero_momentum", "must be a whole number of steps (0 disables)")
        for name in ("traj_every", "log_every", "restart_every", "zero_momentum"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0 (0 disables)")
        if self.dtype not in (None, "float32", "float64"):
            raise bad("dtype", "must be float32 or float64")
        if isinstance(self.block_atoms, str):
            if self.block_atoms not in ("auto", "off"):
                raise bad("block_atoms", "must be a number of atoms, 'auto' or 'off'")
        elif isinstance(self.block_atoms, bool) or not isinstance(self.block_atoms, int):
            raise bad("block_atoms", "must be a number of atoms, 'auto' or 'off'")
        elif self.block_atoms < 1:
            raise bad("block_atoms", "must be >= 1 atom")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> MDConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise InputError(f"config file {str(path)!r} does not exist") from None
        except yaml.YAMLError as exc:
            raise InputError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"config file {str(path)!r}: expected a mapping at the top level")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return config_from_dict(cls, data, where=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(config_to_dict(self), sort_keys=False)
