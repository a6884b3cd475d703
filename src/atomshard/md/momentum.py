"""Removal of centre-of-mass motion (``--zero-momentum N``), on any number of ranks.

Linear momentum ``P = Σ m v`` is removed from every system: ``v ← v − P / M``. For a
system periodic along no axis (a cluster or molecule in vacuum) the angular momentum about
the centre of mass is removed too: with ``r' = r − R_cm``, ``L = Σ m r' × v`` and the
inertia tensor ``I = Σ m (|r'|² 1 − r' r'ᵀ)``, ``ω = I⁺ L`` (pseudo-inverse, so a linear
molecule works) and ``v ← v − ω × r'``. The sums run over every rank's owned atoms
(all-reduced), so every rank applies the same correction and the result equals the serial
one up to the order of the sums.
"""

from __future__ import annotations

import torch

from atomshard.comm import Communicator
from atomshard.md.state import MDState


def zero_momentum(state: MDState, comm: Communicator, *, angular: bool | None = None) -> None:
    """Remove the centre-of-mass linear (and, for clusters, angular) momentum in place.

    Args:
        state: the rank's state (its owned atoms); velocities are changed in place.
        comm: the run's communicator (collective: every rank must call this together).
        angular: also remove the angular momentum; default: when no axis is periodic.
    """
    if angular is None:
        angular = not bool(state.pbc.any())
    f64 = torch.float64
    m = state.masses.to(f64)[:, None]
    v = state.velocities
    r = state.positions.detach().to(f64)
    sums = torch.cat([(m * v).sum(0), m.sum(0), (m * r).sum(0)]).cpu()
    if comm.world_size > 1:
        sums = comm.all_reduce_sum(sums, what="centre-of-mass momentum")
    total_mass = float(sums[3])
    if total_mass <= 0:
        return
    momentum, centre = sums[:3].to(v), sums[4:7].to(v) / total_mass
    v.sub_(momentum / total_mass)
    if not angular:
        return
    rel = r - centre
    ang = (m * torch.linalg.cross(rel, v)).sum(0)
    r2 = (rel * rel).sum(1)
    inertia = (
        m[:, 0, None, None]
        * (
            r2[:, None, None] * torch.eye(3, dtype=f64, device=v.device)
            - rel[:, :, None] * rel[:, None, :]
        )
    ).sum(0)
    packed = torch.cat([ang, inertia.reshape(9)]).cpu()
    if comm.world_size > 1:
        packed = comm.all_reduce_sum(packed, what="angular momentum")
    omega = torch.linalg.pinv(packed[3:].reshape(3, 3)) @ packed[:3]
    v.sub_(torch.linalg.cross(omega.to(v).expand_as(rel), rel))
