"""Rank-side helpers of the benchmarks in ``benchmarks/`` (and their smoke tests).

They live in the package, not in the scripts, so that spawned ranks can import them by
name. Each function runs on every rank of a group (``LocalGroup.run`` or torchrun), times
its work after a barrier and returns this rank's figures; the scripts report the slowest
rank.

- :func:`time_exchange` / :func:`time_evaluation` (:mod:`atomshard.bench.timing`): the
  halo exchange per transport and width; a full potential evaluation (energy, forces,
  stress) with its exchange profile. :func:`peak_rss_mib` is this process's peak memory.
- :func:`time_rebuilds` (:mod:`atomshard.bench.rebuild`): local vs gather neighbour-list
  rebuilds of distributed MD.
- :func:`time_hamiltonian_forward` (:mod:`atomshard.bench.hamiltonian`): the
  graph-parallel Hamiltonian forward pass.

The modules are imported on first use (they pull in the runtime, MD and the Hamiltonian
model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from atomshard.bench.hamiltonian import time_hamiltonian_forward
    from atomshard.bench.rebuild import time_rebuilds
    from atomshard.bench.timing import peak_rss_mib, time_evaluation, time_exchange

_LAZY = {
    "peak_rss_mib": "timing",
    "time_evaluation": "timing",
    "time_exchange": "timing",
    "time_rebuilds": "rebuild",
    "time_hamiltonian_forward": "hamiltonian",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"atomshard.bench.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'atomshard.bench' has no attribute {name!r}")


__all__ = [
    "peak_rss_mib",
    "time_evaluation",
    "time_exchange",
    "time_hamiltonian_forward",
    "time_rebuilds",
]
