"""Counter-based Gaussian noise: the same numbers for an atom whatever rank owns it.

Langevin noise for atom ``i`` at step ``n`` is a pure function of ``(seed, n, i)``
(splitmix64 hashing and Box–Muller). So a trajectory does not depend on how atoms are
partitioned, a restart needs no generator state, and no rank allocates noise for atoms
it does not own.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _uniform(keys: np.ndarray) -> np.ndarray:
    """Uniform floats in (0, 1) from uint64 keys (53 random bits, never exactly 0)."""
    bits = _splitmix64(keys) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def gaussian_noise(seed: int, step: int, atom_ids: np.ndarray) -> np.ndarray:
    """Standard normal noise ``[len(atom_ids), 3]`` float64 for ``(seed, step, atom)``.

    Args:
        seed: run seed (any int).
        step: integration step number.
        atom_ids: ``[n]`` global atom indices.
    """
    ids = np.asarray(atom_ids, dtype=np.uint64)
    with np.errstate(over="ignore"):
        base = _splitmix64(
            _splitmix64(np.array([seed], dtype=np.uint64) + np.uint64(0x5EED)) + np.uint64(step)
        )
        # six uniforms per atom -> three Box–Muller pairs, use one normal of each pair
        keys = base + ids[:, None] * np.uint64(8) + np.arange(6, dtype=np.uint64)[None, :]
    u = _uniform(_splitmix64(keys))
    radius = np.sqrt(-2.0 * np.log(u[:, 0::2]))
    return radius * np.cos(2.0 * np.pi * u[:, 1::2])
