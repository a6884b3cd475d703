"""Configuration of the Allegro potential and the seed's size presets.

The config is the whole architecture: a checkpoint stores it next to the weights, so a
model rebuilds without guessing (:func:`atomshard.utils.config.config_to_dict` /
``config_from_dict``). Field names follow atomshard's other configs; the docstring of
:class:`AllegroConfig` names the matching ``nequip-allegro`` option where one exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from atomshard.errors import InputError
from atomshard.models._checks import (
    checked_cutoff,
    checked_species,
    positive_int,
)

#: body dtypes: float32 (the seed's mixed precision), float64 (exact), bfloat16 (optional)
DTYPES = ("float32", "float64", "bfloat16")
#: activations of the MLPs (nequip-allegro's names); None: linear
MLP_ACTIVATIONS = ("silu", "mish", "gelu", "tanh")


def _fail(field: str, value: Any, why: str) -> InputError:
    return InputError(f"AllegroConfig.{field}={value!r}: {why}")


@dataclass(frozen=True, kw_only=True)
class AllegroConfig:
    """Architecture of :class:`~atomshard.models.allegro.AllegroPotential`.

    Attributes:
        species: atomic numbers the model knows, in type-index order.
        cutoff: radial cutoff, Å (``r_max``); edges at or beyond it contribute nothing.
        l_max: largest angular momentum of the edge spherical harmonics and tensor track.
        parity: full O(3) tensor track (True: both parities of every ``l <= l_max``) or
            only the irreps of the spherical harmonics (False).
        n_layers: Allegro layers (``num_layers``).
        n_scalar: scalar features per edge (``num_scalar_features``).
        n_tensor: tensor channels per edge (``num_tensor_features``).
        n_bessel: Bessel functions of the radial basis (fixed frequencies ``n π / r_max``).
        cutoff_p: degree ``p`` of the polynomial cutoff envelope.
        embed_dim: width of the radial-chemical product embedding
            (``radial_chemical_embed_dim``; even: half centre, half neighbour species).
        two_body_hidden: hidden widths of the two-body MLP.
        two_body_out: output width of the two-body MLP (the scalar embedding); None:
            ``n_scalar`` (what nequip-allegro 0.8 builds).
        two_body_activation: activation of the two-body MLP.
        allegro_hidden: hidden widths of the MLP between Allegro layers.
        allegro_activation: its activation.
        readout_hidden: hidden widths of the edge-energy readout MLP.
        readout_activation: its activation (None: linear, as in the seed).
        path_channel_coupling: tensor-product weights per (channel, path) (True) or per
            path only (False).
        forward_normalize: MLP weight scaling ``1/sqrt(fan_in)`` (True) or
            ``1/sqrt(fan_out)`` (False).
        avg_num_neighbors: edge sums are divided by its square root; one value, or one
            per species (indexed by the centre atom).
        energy_shift: per-species energy shift in eV (one per ``species``), or one value.
        energy_scale: per-species energy scale in eV, or one value.
        zbl: add the Ziegler-Biersack-Littmark screened nuclear repulsion (with the same
            polynomial cutoff) to the energy.
        dtype: dtype of the network body; edge geometry, radial basis and spherical
            harmonics are float64 and energies are summed in float64 either way.
    """

    species: tuple[int, ...]
    cutoff: float = 6.0
    l_max: int = 2
    parity: bool = True
    n_layers: int = 2
    n_scalar: int = 64
    n_tensor: int = 64
    n_bessel: int = 8
    cutoff_p: int = 6
    embed_dim: int = 32
    two_body_hidden: tuple[int, ...] = (64, 64)
    two_body_out: int | None = None
    two_body_activation: str | None = "silu"
    allegro_hidden: tuple[int, ...] = (256, 256)
    allegro_activation: str | None = "silu"
    readout_hidden: tuple[int, ...] = (128,)
    readout_activation: str | None = None
    path_channel_coupling: bool = True
    forward_normalize: bool = True
    avg_num_neighbors: tuple[float, ...] | float = 1.0
    energy_shift: tuple[float, ...] | float = 0.0
    energy_scale: tuple[float, ...] | float = 1.0
    zbl: bool = True
    dtype: str = "float32"

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("species", checked_species(self.species, _fail))
        set_("cutoff", checked_cutoff(self.cutoff, _fail))
        for name in ("n_layers", "n_scalar", "n_tensor", "n_bessel", "embed_dim"):
            if not positive_int(getattr(self, name)):
                raise _fail(name, getattr(self, name), "must be a positive integer")
        if self.embed_dim % 2:
            raise _fail("embed_dim", self.embed_dim, "must be even (centre + neighbour halves)")
        if not positive_int(self.cutoff_p) or self.cutoff_p < 2:
            raise _fail("cutoff_p", self.cutoff_p, "must be an integer >= 2")
        if isinstance(self.l_max, bool) or not isinstance(self.l_max, int):
            raise _fail("l_max", self.l_max, "must be an integer 0..6")
        if not 0 <= self.l_max <= 6:
            raise _fail("l_max", self.l_max, "must be an integer 0..6")
        for name in ("parity", "path_channel_coupling", "forward_normalize", "zbl"):
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, getattr(self, name), "must be true or false")
        if self.two_body_out is not None and not positive_int(self.two_body_out):
            raise _fail("two_body_out", self.two_body_out, "must be a positive integer or None")
        for name in ("two_body_hidden", "allegro_hidden", "readout_hidden"):
            value = getattr(self, name)
            widths = tuple(value) if isinstance(value, (tuple, list)) else None
            if widths is None or not all(positive_int(w) for w in widths):
                raise _fail(name, value, "must be a list of positive integers")
            set_(name, widths)
        for name in ("two_body_activation", "allegro_activation", "readout_activation"):
            value = getattr(self, name)
            if value is not None and value not in MLP_ACTIVATIONS:
                raise _fail(name, value, f"choose one of {MLP_ACTIVATIONS} or None")
        set_("avg_num_neighbors", self._per_species("avg_num_neighbors", positive=True))
        set_("energy_shift", self._per_species("energy_shift", positive=False))
        set_("energy_scale", self._per_species("energy_scale", positive=False))
        if self.dtype not in DTYPES:
            raise _fail("dtype", self.dtype, f"choose one of {DTYPES}")

    def _per_species(self, name: str, *, positive: bool) -> tuple[float, ...]:
        value = getattr(self, name)
        seq = value if isinstance(value, (tuple, list)) else (value,)
        out = []
        for v in seq:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise _fail(name, value, f"{v!r} is not a finite number")
            if positive and v <= 0:
                raise _fail(name, value, "must be positive")
            out.append(float(v))
        if len(out) not in (1, len(self.species)):
            raise _fail(name, value, f"needs 1 or len(species)={len(self.species)} values")
        return tuple(out)

    @property
    def scalar_embed_dim(self) -> int:
        """Width of the two-body scalar embedding (``two_body_out`` or ``n_scalar``)."""
        return self.n_scalar if self.two_body_out is None else int(self.two_body_out)

    @property
    def torch_dtype(self):
        from atomshard.utils.dtypes import parse_dtype

        return parse_dtype(self.dtype, allowed=DTYPES, what="AllegroConfig.dtype")


_COMMON: dict[str, Any] = dict(
    cutoff=6.0,
    n_bessel=8,
    cutoff_p=6,
    embed_dim=32,
    two_body_hidden=(64, 64),
    two_body_out=128,
    two_body_activation="silu",
    readout_hidden=(128,),
    readout_activation=None,
    path_channel_coupling=True,
    parity=True,
    zbl=True,
)

#: The seed's SPICE 2 models (keyword overrides of :class:`AllegroConfig`; ``species`` is
#: still required): Bessel(8, fixed) radial basis, p = 6 cutoff, two-body MLP 2 x 64 into
#: a 32-wide product embedding and a 128-wide scalar embedding, readout 1 x 128 linear,
#: full O(3), path-channel coupling, ZBL, r_cut 6 Å.
PRESETS: dict[str, dict[str, Any]] = {
    "allegro-small": dict(
        _COMMON, n_layers=2, n_scalar=64, n_tensor=64, l_max=2, allegro_hidden=(256, 256)
    ),
    "allegro-medium": dict(
        _COMMON, n_layers=2, n_scalar=64, n_tensor=64, l_max=3, allegro_hidden=(256, 256)
    ),
    "allegro-large": dict(
        _COMMON,
        n_layers=3,
        n_scalar=128,
        n_tensor=128,
        l_max=3,
        allegro_hidden=(512, 512, 512),
    ),
}


def preset(name: str, *, species: tuple[int, ...], **overrides: Any) -> AllegroConfig:
    """A preset config (``"allegro-small"``, ``"allegro-medium"``, ``"allegro-large"``)
    with ``overrides``."""
    try:
        base = dict(PRESETS[name])
    except KeyError:
        raise InputError(
            f"unknown Allegro preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None
    base.update(overrides)
    return AllegroConfig(species=tuple(species), **base)
