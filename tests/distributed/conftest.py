"""Fixtures shared by the distributed test modules."""

from __future__ import annotations

import pytest

from atomshard.comm import LocalGroup


@pytest.fixture(scope="session")
def hamiltonian_groups():
    """Local process groups by size, opened once for both Hamiltonian test modules."""
    opened: dict[int, LocalGroup] = {}

    def get(n: int) -> LocalGroup:
        if n not in opened:
            opened[n] = LocalGroup(n, timeout_s=60, threads_per_rank=1)
        return opened[n]

    yield get
    for g in opened.values():
        g.close()
