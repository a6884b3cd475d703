"""Validation shared by the model configs (each passes its own ``fail`` so the error names
its class and field: ``NequIPConfig.cutoff=-1: ...``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from atomshard.errors import InputError

Fail = Callable[[str, Any, str], InputError]


def positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def positive_number(v: Any) -> bool:
    return (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(float(v))
        and float(v) > 0
    )


def checked_species(value: Any, fail: Fail) -> tuple[int, ...]:
    """``value`` as a tuple of distinct atomic numbers 1..118, or ``fail("species", ...)``."""
    species = tuple(value) if isinstance(value, (tuple, list)) else ()
    if not species:
        raise fail("species", value, "needs at least one element")
    for z in species:
        if isinstance(z, bool) or not isinstance(z, int) or not 1 <= z <= 118:
            raise fail("species", value, f"{z!r} is not an atomic number 1..118")
    if len(set(species)) != len(species):
        raise fail("species", value, "contains duplicates")
    return species


def checked_cutoff(value: Any, fail: Fail) -> float:
    """``value`` as a positive finite cutoff in Å, or ``fail("cutoff", ...)``."""
    if not positive_number(value):
        raise fail("cutoff", value, "must be a positive number (Å)")
    return float(value)
