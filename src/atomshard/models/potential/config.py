"""Configuration of the NequIP/SevenNet-class potential, and size presets.

The config is the whole architecture: a checkpoint stores it next to the weights, so a
model rebuilds without guessing. YAML in and out is just this dataclass
(:func:`atomshard.utils.config.config_to_dict` / ``config_from_dict``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from atomshard.errors import InputError
from atomshard.models._checks import (
    checked_cutoff,
    checked_species,
    positive_number,
)
from atomshard.nn.radial import ACTIVATIONS

DTYPES = ("float32", "float64")
CUTOFF_KINDS = ("polynomial", "xplor")
SELF_CONNECTIONS = ("linear", "species", "none")


def _fail(field: str, value: Any, why: str) -> InputError:
    return InputError(f"NequIPConfig.{field}={value!r}: {why}")


@dataclass(frozen=True, kw_only=True)
class NequIPConfig:
    """Architecture of :class:`~atomshard.models.potential.NequIPPotential`.

    Attributes:
        species: atomic numbers the model knows, in type-index order (row ``i`` of the
            embedding belongs to ``species[i]``).
        cutoff: radial cutoff in Å; edges at or beyond it contribute exactly zero.
        channels: multiplicity of every node irrep (ignored where ``hidden_irreps`` is set).
        l_max: largest angular momentum of node features and edge spherical harmonics.
        n_layers: number of message-passing (interaction) layers.
        parity: O(3) (True: ``1o`` vectors, reflections respected) or SO(3) only (False:
            every irrep even, as in SevenNet-0).
        hidden_irreps: optional explicit node irreps, ``n_layers + 1`` strings (after the
            embedding and after each layer; the last must be scalars), overriding
            ``channels``/``l_max`` for the node features (SevenNet's ``irreps_manual``).
        n_radial: number of Bessel functions.
        trainable_radial: whether the Bessel frequencies are trainable.
        radial_hidden: hidden widths of the per-layer radial MLP.
        radial_activation: activation of the radial MLP (a name in ``ACTIVATIONS``).
        cutoff_kind: ``"polynomial"`` (degree ``cutoff_p``) or ``"xplor"`` (from ``cutoff_on``).
        cutoff_p: degree of the polynomial envelope.
        cutoff_on: XPLOR switching start in Å (``0 <= cutoff_on < cutoff``).
        normalize_sh: spherical harmonics of the unit edge vector (True) or of the raw one.
        avg_num_neighbors: per-layer normaliser; summed messages are divided by its square
            root. A single value applies to every layer.
        self_connection: ``"linear"`` (SevenNet-0), ``"species"`` (NequIP: a tensor product
            with the one-hot species) or ``"none"``.
        scalar_activation: activation of even/odd scalars in the gates, ``(even, odd)``.
        gate_activation: activation of the even/odd gate scalars, ``(even, odd)``.
        linear_biases: biases on the scalar outputs of the equivariant linear layers.
        readout_hidden: width of the hidden readout layer; None: half the last width.
        energy_shift: per-species energy shift in eV (one per ``species``), or one value.
        energy_scale: per-species energy scale in eV, or one value.
        dtype: dtype of the network body (``"float32"`` or ``"float64"``); geometry and
            energies are always float64.
    """

    species: tuple[int, ...]
    cutoff: float = 4.0
    channels: int = 32
    l_max: int = 2
    n_layers: int = 3
    parity: bool = True
    hidden_irreps: tuple[str, ...] | None = None
    n_radial: int = 8
    trainable_radial: bool = True
    radial_hidden: tuple[int, ...] = (64, 64)
    radial_activation: str = "silu"
    cutoff_kind: str = "polynomial"
    cutoff_p: int = 6
    cutoff_on: float = 0.0
    normalize_sh: bool = True
    avg_num_neighbors: tuple[float, ...] | float = 1.0
    self_connection: str = "linear"
    scalar_activation: tuple[str, str] = ("silu", "tanh")
    gate_activation: tuple[str, str] = ("silu", "tanh")
    linear_biases: bool = False
    readout_hidden: int | None = None
    energy_shift: tuple[float, ...] | float = 0.0
    energy_scale: tuple[float, ...] | float = 1.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("species", checked_species(self.species, _fail))
        set_("cutoff", checked_cutoff(self.cutoff, _fail))
        for name in ("channels", "n_layers", "n_radial", "cutoff_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _fail(name, value, "must be a positive integer")
        if isinstance(self.l_max, bool) or not isinstance(self.l_max, int) or self.l_max < 0:
            raise _fail("l_max", self.l_max, "must be a non-negative integer")
        if self.l_max > 6:
            raise _fail("l_max", self.l_max, "must be at most 6")
        if self.hidden_irreps is not None:
            self._check_hidden_irreps()
        radial_hidden = tuple(self.radial_hidden)
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in radial_hidden):
            raise _fail("radial_hidden", self.radial_hidden, "must be positive integers")
        set_("radial_hidden", radial_hidden)
        for name in ("radial_activation",):
            if getattr(self, name) not in ACTIVATIONS:
                raise _fail(name, getattr(self, name), f"known: {sorted(ACTIVATIONS)}")
        for name in ("scalar_activation", "gate_activation"):
            pair = tuple(getattr(self, name))
            if len(pair) != 2 or any(a not in ACTIVATIONS for a in pair):
                raise _fail(
                    name, getattr(self, name), f"needs (even, odd) from {sorted(ACTIVATIONS)}"
                )
            set_(name, pair)
        if self.cutoff_kind not in CUTOFF_KINDS:
            raise _fail("cutoff_kind", self.cutoff_kind, f"choose one of {CUTOFF_KINDS}")
        if self.cutoff_kind == "xplor" and not (0.0 <= self.cutoff_on < self.cutoff):
            raise _fail("cutoff_on", self.cutoff_on, f"needs 0 <= cutoff_on < cutoff={self.cutoff}")
        set_("cutoff_on", float(self.cutoff_on))
        set_("avg_num_neighbors", self._per_layer("avg_num_neighbors", self.avg_num_neighbors))
        if self.self_connection not in SELF_CONNECTIONS:
            raise _fail(
                "self_connection", self.self_connection, f"choose one of {SELF_CONNECTIONS}"
            )
        if self.readout_hidden is not None and (
            isinstance(self.readout_hidden, bool)
            or not isinstance(self.readout_hidden, int)
            or self.readout_hidden < 1
        ):
            raise _fail("readout_hidden", self.readout_hidden, "must be a positive integer or None")
        set_("energy_shift", self._per_species("energy_shift", self.energy_shift, any_sign=True))
        set_("energy_scale", self._per_species("energy_scale", self.energy_scale, any_sign=False))
        if self.dtype not in DTYPES:
            raise _fail("dtype", self.dtype, f"choose one of {DTYPES}")

    def _check_hidden_irreps(self) -> None:
        from e3nn import o3

        irreps = tuple(str(s) for s in self.hidden_irreps or ())
        if len(irreps) != self.n_layers + 1:
            raise _fail(
                "hidden_irreps",
                self.hidden_irreps,
                f"needs n_layers + 1 = {self.n_layers + 1} entries, got {len(irreps)}",
            )
        for s in irreps:
            try:
                o3.Irreps(s)
            except (ValueError, AssertionError) as exc:
                raise _fail("hidden_irreps", s, f"not an irreps string ({exc})") from None
        if any(ir.l > 0 for _, ir in o3.Irreps(irreps[0])) or any(
            ir.l > 0 for _, ir in o3.Irreps(irreps[-1])
        ):
            raise _fail("hidden_irreps", self.hidden_irreps, "first and last must be scalars")
        object.__setattr__(self, "hidden_irreps", irreps)

    def _per_layer(self, name: str, value: Any) -> tuple[float, ...]:
        values = _as_floats(name, value)
        if len(values) == 1:
            values = values * self.n_layers
        if len(values) != self.n_layers:
            raise _fail(name, value, f"needs 1 or n_layers={self.n_layers} values")
        if any(not positive_number(v) for v in values):
            raise _fail(name, value, "must be positive")
        return values

    def _per_species(self, name: str, value: Any, *, any_sign: bool) -> tuple[float, ...]:
        values = _as_floats(name, value)
        if len(values) == 1:
            values = values * len(self.species)
        if len(values) != len(self.species):
            raise _fail(name, value, f"needs 1 or len(species)={len(self.species)} values")
        if any(not math.isfinite(v) for v in values):
            raise _fail(name, value, "must be finite")
        if not any_sign and any(v <= 0 for v in values):
            raise _fail(name, value, "must be positive")
        return values

    @property
    def torch_dtype(self):
        from atomshard.utils.dtypes import parse_dtype

        return parse_dtype(self.dtype, allowed=DTYPES, what="dtype")


def _as_floats(name: str, value: Any) -> tuple[float, ...]:
    seq = value if isinstance(value, (tuple, list)) else (value,)
    out = []
    for v in seq:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(name, value, f"{v!r} is not a number")
        out.append(float(v))
    return tuple(out)


#: Size presets: keyword overrides of :class:`NequIPConfig` (``species`` still required).
PRESETS: dict[str, dict[str, Any]] = {
    "S": dict(channels=16, l_max=1, n_layers=3, cutoff=4.0),
    "M": dict(channels=32, l_max=2, n_layers=4, cutoff=5.0),
    "L": dict(channels=64, l_max=3, n_layers=5, cutoff=5.0),
    # SevenNet SI benchmark model: 32 channels, 4 layers, l_max 3, 4.0 Å (α-quartz).
    "si-config": dict(channels=32, l_max=3, n_layers=4, cutoff=4.0),
}


def preset(name: str, *, species: tuple[int, ...], **overrides: Any) -> NequIPConfig:
    """A preset config (``"S"``, ``"M"``, ``"L"``, ``"si-config"``) with ``overrides``."""
    try:
        base = dict(PRESETS[name])
    except KeyError:
        raise InputError(
            f"unknown NequIP preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None
    base.update(overrides)
    return NequIPConfig(species=tuple(species), **base)


def replace(cfg: NequIPConfig, **changes: Any) -> NequIPConfig:
    """``dataclasses.replace`` that re-validates (avg_num_neighbors expands per layer)."""
    if "n_layers" in changes and "avg_num_neighbors" not in changes:
        changes["avg_num_neighbors"] = cfg.avg_num_neighbors[0]  # type: ignore[index]
    return dataclasses.replace(cfg, **changes)
