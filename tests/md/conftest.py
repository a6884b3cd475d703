from __future__ import annotations

import numpy as np
import pytest
from ase.lattice.cubic import FaceCenteredCubic

from atomshard.models.pair import LennardJones


@pytest.fixture
def argon():
    """A 108-atom fcc argon crystal (a = 5.26 Å), slightly rattled."""
    atoms = FaceCenteredCubic("Ar", latticeconstant=5.26, size=(3, 3, 3))
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture
def lj():
    return LennardJones(epsilon=0.0104, sigma=3.40, cutoff=7.0)


def max_abs(a) -> float:
    return float(np.max(np.abs(np.asarray(a))))
