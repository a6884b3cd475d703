"""Process groups shared by the distributed tests: opened on first use, closed at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from atomshard.comm import LocalGroup


def _group_cache(timeout_s: float) -> Iterator[Callable[[int], LocalGroup]]:
    opened: dict[int, LocalGroup] = {}

    def get(n: int) -> LocalGroup:
        if n not in opened:
            opened[n] = LocalGroup(n, timeout_s=timeout_s, threads_per_rank=1)
        return opened[n]

    yield get
    for g in opened.values():
        g.close()


@pytest.fixture(scope="module")
def groups() -> Iterator[Callable[[int], LocalGroup]]:
    """``groups(n)``: a local group of n ranks, one per size, for one test module."""
    yield from _group_cache(timeout_s=120)


@pytest.fixture(scope="session")
def hamiltonian_groups() -> Iterator[Callable[[int], LocalGroup]]:
    """Local process groups by size, opened once for both Hamiltonian test modules."""
    yield from _group_cache(timeout_s=60)
