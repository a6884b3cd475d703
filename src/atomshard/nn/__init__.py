"""Shared neural-network building blocks: radial bases, cutoffs, radial MLPs."""

from atomshard.nn.radial import (
    ACTIVATIONS,
    BesselBasis,
    PolynomialCutoff,
    RadialMLP,
    XPLORCutoff,
)

__all__ = ["ACTIVATIONS", "BesselBasis", "PolynomialCutoff", "RadialMLP", "XPLORCutoff"]
