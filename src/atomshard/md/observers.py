"""Observers: user callbacks the MD driver calls every N steps (ASE's ``attach`` in spirit).

Pass them to :func:`atomshard.md.run_md` as ``observers=[Observer(fn, every=10)]``.

* ``Observer(fn, every=N)`` (rank 0): ``fn(state)`` gets the *whole* system as one
  :class:`~atomshard.md.state.MDState` in global atom order (gathered from every rank in a
  distributed run, the state itself serially). Use it for analysis, custom files, early
  stopping flags kept in your own objects.
* ``Observer(fn, every=N, all_ranks=True)``: ``fn(state, comm)`` runs on every rank with
  that rank's own atoms (``state.atom_ids`` are their global ids) and the run's
  communicator; it may use collectives (every rank calls it at the same steps). Nothing
  is gathered, so it scales to systems no single process could hold.

Both are called after the step's forces, thermo row and trajectory frame, at step 0 of a
new run (not again on resume) and whenever ``state.step % every == 0``. An observer must
not change the state (it would break bit-identical resumes); use
``--zero-momentum`` and the ensembles for that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from atomshard.errors import InputError


@dataclass(frozen=True)
class Observer:
    """A callback run every ``every`` steps; see the module docstring for the two kinds."""

    fn: Callable[..., Any]
    every: int = 1
    all_ranks: bool = False

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise InputError(f"observer: {self.fn!r} is not callable")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise InputError(f"observer: every = {self.every!r}: must be a positive integer")

    def due(self, step: int) -> bool:
        return step % self.every == 0
