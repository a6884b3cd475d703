"""Data parallelism: 2-rank gradients == 1-rank gradients on the same global batch."""

from __future__ import annotations

import numpy as np
import pytest

from atomshard.comm import LocalGroup, NullCommunicator
from atomshard.errors import InputError
from atomshard.train.data import LabelledStructure
from atomshard.train.parallel import epoch_batches, shard
from tests.train.train_cases import rank_gradient, tiny_frames


def _frames(n: int) -> list[LabelledStructure]:
    from atomshard.train.data import labelled_from_atoms

    return [labelled_from_atoms(a, f"frame {k}") for k, a in enumerate(tiny_frames(n, seed=3))]


@pytest.mark.distributed
def test_two_rank_gradients_equal_one_rank_for_both_strategies():
    import dataclasses

    frames = _frames(5)  # odd count: the shards differ in size
    # frames without an energy: the energy term is over the global count of those with
    # one (rank 0's shard of `mixed` has 1 of the 2, rank 1's the other; in `apart` rank
    # 0 has none)
    mixed = [dataclasses.replace(f, energy=None) if k in (0, 1, 4) else f
             for k, f in enumerate(frames)]  # fmt: skip
    apart = [mixed[0], mixed[2]]
    with LocalGroup(2, timeout_s=120, threads_per_rank=1) as group:
        # 5 frames, and 1 frame (rank 1 has an empty shard and contributes zeros)
        for batch in (frames, frames[:1], mixed, apart):
            serial = rank_gradient(NullCommunicator(), batch, "allreduce")
            assert np.abs(serial).max() > 0
            for strategy in ("allreduce", "ddp"):
                for g in group.run(rank_gradient, batch, strategy):
                    scale = np.abs(serial).max()
                    np.testing.assert_allclose(g, serial, rtol=1e-10, atol=1e-12 * scale)


def test_epoch_batches_cover_every_frame_once_and_depend_on_seed_and_epoch():
    a = epoch_batches(10, 4, seed=1, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(10))
    assert [len(b) for b in a] == [4, 4, 2]
    assert a == epoch_batches(10, 4, seed=1, epoch=0)
    assert a != epoch_batches(10, 4, seed=1, epoch=1)
    assert a != epoch_batches(10, 4, seed=2, epoch=0)
    # the batches do not depend on the world size (same trajectory on any rank count)
    assert epoch_batches(9, 4, seed=0, epoch=0, world_size=4) == epoch_batches(
        9, 4, seed=0, epoch=0
    )
    with pytest.raises(InputError, match="empty"):
        epoch_batches(0, 4, seed=0, epoch=0)


def test_validation_shards_do_not_duplicate():
    for world in (1, 2, 3, 4):
        parts = [shard(list(range(7)), r, world) for r in range(world)]
        assert sorted(i for p in parts for i in p) == list(range(7))
