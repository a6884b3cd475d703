"""The one timing loop of the single-process benchmark workers (standard library only).

bench_potential, bench_utilisation and bench_peers time a step the same way; bench_peers
also runs it under other interpreters (nequip, mace environments), hence no imports
beyond the standard library. Workers run as scripts, so this folder is on ``sys.path``.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable


def time_steps(step: Callable[[], float], n_atoms: int, steps: int, warmup: int) -> dict:
    """``warmup`` untimed and ``steps`` timed calls of ``step`` (which returns the energy):
    wall and CPU seconds per step, their medians, atom·steps/s, peak RSS (MB) before the
    first step and at the end, and the last energy."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    for _ in range(warmup):
        step()
    times, cpu_times, energy = [], [], 0.0
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        energy = step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {
        "n_atoms": n_atoms,
        "times_s": times,
        "cpu_times_s": cpu_times,
        "median_s": statistics.median(times),
        "median_cpu_s": statistics.median(cpu_times),
        "min_s": min(times),
        "max_s": max(times),
        "atom_steps_per_s": n_atoms / statistics.median(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_before_first_step_mb": rss_before,
        "energy_ev": energy,
    }


def time_epochs(
    step: Callable[[object], float],
    batches: list,
    epochs: int,
    n_atoms: int,
    before_epoch: Callable[[], None] | None = None,
) -> dict:
    """One untimed warm-up epoch over ``batches``, then ``epochs`` timed ones (the training
    benchmarks: bench_train_speed serially and on ranks, its mace worker). Returns the wall
    and CPU seconds of each epoch, atoms (``n_atoms`` per epoch) per median wall and CPU
    second, the peak RSS (MB) and the last loss ``step(batch)`` returned.
    ``before_epoch`` runs before each timed epoch, outside its time (a barrier on ranks)."""
    for batch in batches:
        step(batch)
    epoch_s, epoch_cpu_s, loss = [], [], float("nan")
    for _ in range(epochs):
        if before_epoch is not None:
            before_epoch()
        start, cpu_start = time.perf_counter(), time.process_time()
        for batch in batches:
            loss = step(batch)
        epoch_s.append(time.perf_counter() - start)
        epoch_cpu_s.append(time.process_time() - cpu_start)
    return {
        "atoms_per_epoch": n_atoms,
        "epoch_s": epoch_s,
        "epoch_cpu_s": epoch_cpu_s,
        "atoms_per_s": n_atoms / statistics.median(epoch_s),
        "atoms_per_cpu_s": n_atoms / statistics.median(epoch_cpu_s),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "last_loss": loss,
    }
