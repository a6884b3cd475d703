"""The NequIP/SevenNet-class equivariant potential, its config and the SevenNet import."""

from atomshard.models.potential.config import PRESETS, NequIPConfig, preset
from atomshard.models.potential.model import NequIPPotential

__all__ = ["PRESETS", "NequIPConfig", "NequIPPotential", "preset"]
