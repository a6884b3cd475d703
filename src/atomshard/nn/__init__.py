"""Shared neural-network building blocks: radial bases, cutoffs, radial MLPs and the SiLU
with a lean second derivative (:mod:`atomshard.nn.activations`)."""

from atomshard.nn.radial import (
    ACTIVATIONS,
    BesselBasis,
    PolynomialCutoff,
    RadialMLP,
    XPLORCutoff,
)

__all__ = ["ACTIVATIONS", "BesselBasis", "PolynomialCutoff", "RadialMLP", "XPLORCutoff"]
