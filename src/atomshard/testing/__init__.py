"""Property checks for any potential, shipped in the package (used by ``tests/``).

Plain functions (each raises :class:`AssertionError` with a clear message)::

    from atomshard.testing import check_rotation, check_forces_finite_difference
    check_rotation(model, atoms)

and, for pytest classes, :class:`PotentialPropertyTests` with
:func:`default_structures` (these import pytest, so they load on first use).
"""

from typing import Any

from atomshard.testing._autograd import grad_fn_names
from atomshard.testing._checks import (
    SinglePoint,
    check_cutoff_smoothness,
    check_forces_finite_difference,
    check_fragments_add_up,
    check_permutation,
    check_rotation,
    check_stress_finite_difference,
    check_translation,
    check_wrapping,
    evaluate,
    random_rotation,
    random_structure,
)


def __getattr__(name: str) -> Any:
    if name in ("PotentialPropertyTests", "default_structures"):
        from atomshard.testing import _mixin

        return getattr(_mixin, name)
    raise AttributeError(f"module 'atomshard.testing' has no attribute {name!r}")


__all__ = [
    "PotentialPropertyTests",
    "SinglePoint",
    "check_cutoff_smoothness",
    "check_forces_finite_difference",
    "check_fragments_add_up",
    "check_permutation",
    "check_rotation",
    "check_stress_finite_difference",
    "check_translation",
    "check_wrapping",
    "default_structures",
    "evaluate",
    "grad_fn_names",
    "random_rotation",
    "random_structure",
]
