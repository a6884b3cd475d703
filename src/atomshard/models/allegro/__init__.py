"""Allegro: the strictly local equivariant potential (nequip-allegro 0.8's architecture).

Example:
    >>> from atomshard.models.allegro import AllegroPotential, preset
    >>> model = AllegroPotential(preset("allegro-small", species=(1, 8)))  # doctest: +SKIP
"""

from atomshard.models.allegro.config import PRESETS, AllegroConfig, preset
from atomshard.models.allegro.model import AllegroPotential

__all__ = ["PRESETS", "AllegroConfig", "AllegroPotential", "preset"]
