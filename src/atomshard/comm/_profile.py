"""Per-rank timings of the halo exchange and the compute between exchanges.

The decomposition follows the Hamiltonian seed's Fig. 6c: *pack* (gather the rows each
peer needs into the send buffer), *send/recv* (post and complete all transfers), *unpack*
(land received rows; free in the forward, an ``index_add_`` in the backward), and the
*compute* between consecutive exchanges of a step (one message-passing layer each).

An *overlapped* exchange (``HaloExchange.start`` ... ``wait``) is posted, the caller computes
while it is in flight, then waits: its ``comm_s`` is only the time spent posting and
waiting (what the step pays), ``inflight_s`` the time from posting to the end of the wait.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExchangeRecord:
    """One exchange call. Times in seconds, ``nbytes`` sent by this rank."""

    step: int
    call: int
    direction: str  # "forward" or "backward"
    width: int
    pack_s: float
    comm_s: float
    unpack_s: float
    nbytes: int
    t_start: float
    t_end: float
    overlapped: bool = False
    inflight_s: float = 0.0


@dataclass
class StepRecord:
    """One evaluation (energy + forces + stress) on this rank. Times in seconds."""

    step: int
    total_s: float
    exchange_s: float
    forward_layer_compute_s: list[float] = field(default_factory=list)


class ExchangeProfiler:
    """Collects :class:`ExchangeRecord` s and per-step totals for one rank.

    Use ``start_step()`` before an evaluation and ``end_step()`` after it; the exchange
    calls :meth:`record`.
    """

    def __init__(self) -> None:
        self.exchanges: list[ExchangeRecord] = []
        self.steps: list[StepRecord] = []
        self._step = -1
        self._call = 0
        self._t0 = 0.0

    def start_step(self) -> None:
        self._step += 1
        self._call = 0
        self._t0 = time.perf_counter()

    def record(
        self,
        direction: str,
        width: int,
        pack_s: float,
        comm_s: float,
        unpack_s: float,
        nbytes: int,
        *,
        overlapped: bool = False,
        inflight_s: float = 0.0,
    ) -> None:
        t_end = time.perf_counter()
        total = pack_s + comm_s + unpack_s
        self.exchanges.append(
            ExchangeRecord(
                step=self._step,
                call=self._call,
                direction=direction,
                width=width,
                pack_s=pack_s,
                comm_s=comm_s,
                unpack_s=unpack_s,
                nbytes=nbytes,
                t_start=t_end - total,
                t_end=t_end,
                overlapped=overlapped,
                inflight_s=inflight_s,
            )
        )
        self._call += 1

    def end_step(self) -> None:
        t1 = time.perf_counter()
        mine = [e for e in self.exchanges if e.step == self._step]
        exchange_s = sum(e.pack_s + e.comm_s + e.unpack_s for e in mine)
        fwd = [e for e in mine if e.direction == "forward"]
        bwd = [e for e in mine if e.direction == "backward"]
        # compute of layer i: from the end of forward exchange i to the next exchange
        edges = [e.t_end for e in fwd]
        nexts = [e.t_start for e in fwd[1:]] + [bwd[0].t_start if bwd else t1]
        layers = [max(0.0, b - a) for a, b in zip(edges, nexts)]
        self.steps.append(StepRecord(self._step, t1 - self._t0, exchange_s, layers))

    def summary(self, *, skip: int = 1) -> dict[str, Any]:
        """Medians over steps (the first ``skip`` are warm-up when there are more)."""
        steps = self.steps[skip:] if len(self.steps) > skip else self.steps
        kept = {s.step for s in steps}
        ex = [e for e in self.exchanges if e.step in kept]

        def med(values: list[float]) -> float:
            return float(statistics.median(values)) if values else 0.0

        def per_step(key: str, direction: str | None = None) -> float:
            sums = []
            for s in kept:
                sums.append(
                    sum(
                        getattr(e, key)
                        for e in ex
                        if e.step == s and (direction is None or e.direction == direction)
                    )
                )
            return med(sums)

        n_layers = max((len(s.forward_layer_compute_s) for s in steps), default=0)
        layer_compute = [
            med([s.forward_layer_compute_s[i] for s in steps if i < len(s.forward_layer_compute_s)])
            for i in range(n_layers)
        ]
        total = med([s.total_s for s in steps])
        exchange = med([s.exchange_s for s in steps])
        return {
            "n_steps": len(steps),
            "step_s": total,
            "exchange_s": exchange,
            "exchange_fraction": exchange / total if total > 0 else 0.0,
            "compute_s": total - exchange,
            "pack_s": per_step("pack_s"),
            "send_recv_s": per_step("comm_s"),
            "unpack_s": per_step("unpack_s"),
            "forward_exchanges_per_step": med(
                [float(sum(e.direction == "forward" for e in ex if e.step == s)) for s in kept]
            ),
            "overlapped_exchanges_per_step": med(
                [float(sum(e.overlapped for e in ex if e.step == s)) for s in kept]
            ),
            "inflight_s": per_step("inflight_s"),
            "bytes_sent_per_step": per_step("nbytes"),
            "forward_layer_compute_s": layer_compute,
            "calls": self.calls(skip=skip),
        }

    def calls(self, *, skip: int = 1) -> list[dict[str, Any]]:
        """Per exchange call of a step (in call order), the median over steps of its wait.

        ``wait_s`` is what the step paid for that call (``comm_s``: the blocking send/recv,
        or the wait of an overlapped one). Compared call by call across ranks, the smallest
        wait is close to the transfer itself; the rest is waiting for a slower rank.
        """
        steps = self.steps[skip:] if len(self.steps) > skip else self.steps
        kept = {s.step for s in steps}
        by_call: dict[int, list[ExchangeRecord]] = {}
        for e in self.exchanges:
            if e.step in kept:
                by_call.setdefault(e.call, []).append(e)
        out = []
        for call in sorted(by_call):
            recs = by_call[call]
            out.append(
                {
                    "call": call,
                    "direction": recs[0].direction,
                    "width": recs[0].width,
                    "overlapped": recs[0].overlapped,
                    "wait_s": float(statistics.median(e.comm_s for e in recs)),
                    "inflight_s": float(statistics.median(e.inflight_s for e in recs)),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "steps": [asdict(s) for s in self.steps],
            "exchanges": [asdict(e) for e in self.exchanges],
        }
