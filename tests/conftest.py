"""Shared fixtures: reference-data location, float tolerances, small structures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: Reference data made by others; present in CI and developer checkouts, absent in a
#: user's fresh clone (tests that need it skip with that reason).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path under ``../shared/data``; skips the test when the folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} not present (user checkout without ../shared/data)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


@pytest.fixture(params=["float32", "float64"])
def float_tolerance(request):
    """``(dtype name, relative tolerance)`` for checks run in both precisions."""
    return request.param, {"float32": 1e-4, "float64": 1e-10}[request.param]
