"""Row exchange among ranks: each rank sends any number of rows to any other rank.

Used when the sizes are not known in advance (atom migration, ghost atoms and halo
requests at a distributed neighbour-list rebuild). Two steps, both with the
communicator's timeouts:

1. the row counts, one ``all_to_all`` of ``world_size`` integers (``O(world_size)``
   per rank, never ``O(n_atoms)``);
2. the rows, point-to-point with only the peers that send or receive something.

Rows are one 2-D tensor per destination (every block with the same width and dtype), so
several per-atom fields travel packed side by side in one message (e.g. float64 id,
position, velocity, mass, species: integers below 2**53 are exact in float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from atomshard.errors import InputError


def exchange_rows(
    comm: Any,
    blocks: Sequence[torch.Tensor],
    *,
    what: str = "row exchange",
) -> list[torch.Tensor]:
    """Send ``blocks[r]`` to rank ``r``; return the block received from every rank.

    Collective: every rank of ``comm`` calls it (with possibly empty blocks).

    Shapes:
        blocks: ``world_size`` tensors ``[k_r, width]``, one dtype and width for all
        returns: ``world_size`` tensors ``[m_q, width]`` (``returns[rank]`` is
        ``blocks[rank]`` itself: a rank's rows for itself never travel)
    """
    world, rank = int(comm.world_size), int(comm.rank)
    if len(blocks) != world:
        raise InputError(f"exchange_rows needs {world} blocks (one per rank), got {len(blocks)}")
    if not all(b.ndim == 2 for b in blocks):
        raise InputError("exchange_rows: every block must be a 2-D tensor [rows, width]")
    width, dtype = blocks[0].shape[1], blocks[0].dtype
    if any(b.shape[1] != width or b.dtype != dtype for b in blocks):
        raise InputError("exchange_rows: every block must have the same width and dtype")
    device = comm.device
    blocks = [b.to(device).contiguous() for b in blocks]
    if world == 1:
        return [blocks[0]]
    send_counts = torch.tensor([len(b) for b in blocks], dtype=torch.int64, device=device)
    send_counts[rank] = 0
    recv_counts = torch.zeros(world, dtype=torch.int64, device=device)
    ones = [1] * world
    comm.start_all_to_all(recv_counts, send_counts, ones, ones, what=f"{what} (row counts)").wait()
    counts = recv_counts.tolist()
    recvs = {
        q: torch.empty(int(counts[q]), width, dtype=dtype, device=device)
        for q in range(world)
        if q != rank and counts[q] > 0
    }
    sends = {q: blocks[q] for q in range(world) if q != rank and len(blocks[q]) > 0}
    comm.start_p2p(sends, recvs, what=what).wait()
    return [
        blocks[q] if q == rank else recvs.get(q, torch.empty(0, width, dtype=dtype, device=device))
        for q in range(world)
    ]
