"""Stop long runs cleanly on SIGTERM (what batch schedulers send before they kill).

:class:`StopOnSigterm` records the signal instead of dying; the run checks
:meth:`StopOnSigterm.requested` once per step, finishes that step, writes its restart or
checkpoint, says so and exits. Outside the main thread (where Python cannot install
handlers) it records nothing and the default behaviour stays.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class StopOnSigterm:
    """Context manager: while active, SIGTERM sets :attr:`received` instead of killing.

    ``forward`` (optional) is called with the signal number when one arrives, e.g. to
    pass it on to child processes.
    """

    def __init__(self, forward: Any = None) -> None:
        self.received = False
        self._forward = forward
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if self._forward is not None:
            self._forward(signum)

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def forward_to_children(signum: int) -> None:
    """Pass a signal on to this process's multiprocessing children (the spawned ranks of
    ``--ranks N``), so a scheduler's SIGTERM to the launcher reaches every rank."""
    import multiprocessing
    import os

    for child in multiprocessing.active_children():
        if child.pid is not None:
            os.kill(child.pid, signum)
