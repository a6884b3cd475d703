"""The shared rank patterns: run_on_ranks, root_call, root_scatter, gather_by_id (serial and 2
ranks)."""

from __future__ import annotations

import numpy as np
import pytest

from atomshard.comm import (
    NullCommunicator,
    RankFailure,
    gather_by_id,
    root_call,
    root_scatter,
    run_on_ranks,
)
from atomshard.errors import InputError


def _fail_on_root(value: int) -> int:
    if value < 0:
        raise InputError(f"negative value {value}")
    return value * 2


def _parts_on_root(value: int, n: int) -> list[int]:
    return [_fail_on_root(value) + k for k in range(n)]


def _rank_body(comm, value: int, *, big=None):
    doubled = root_call(comm, _fail_on_root, value)
    part = root_scatter(comm, _parts_on_root, value, comm.world_size)
    # every rank holds the atoms with ids = rank, rank + world, ... (interleaved)
    ids = np.arange(comm.rank, 7, comm.world_size)
    got = gather_by_id(comm, ids, pos=np.stack([ids, -ids], axis=1).astype(float), z=ids * 10)
    parts = comm.gather_objects(part) if comm.world_size > 1 else [part]
    return {"doubled": doubled, "parts": parts, "gathered": got, "big": big, "rank": comm.rank}


def test_serial_is_one_rank_in_process():
    out = run_on_ranks(_rank_body, 1, 4, root_only={"big": "payload"})
    assert out["doubled"] == 8 and out["big"] == "payload" and out["rank"] == 0
    assert out["parts"] == [8]
    assert np.array_equal(out["gathered"]["ids"], np.arange(7))
    assert np.array_equal(out["gathered"]["pos"][:, 0], np.arange(7))
    assert np.array_equal(out["gathered"]["z"], np.arange(7) * 10)
    with pytest.raises(InputError, match="at least 1"):
        run_on_ranks(_rank_body, 0, 4)


def test_root_call_raises_on_every_rank_serially():
    with pytest.raises(InputError, match="negative value -1"):
        root_call(NullCommunicator(), _fail_on_root, -1)
    with pytest.raises(InputError, match="negative value -1"):
        root_scatter(NullCommunicator(), _parts_on_root, -1, 1)
    with pytest.raises(ValueError, match="2 items for 1 ranks"):
        root_scatter(NullCommunicator(), _parts_on_root, 1, 2)


@pytest.mark.distributed
def test_two_ranks_gather_in_id_order_and_share_root_errors():
    out = run_on_ranks(_rank_body, 2, 3, root_only={"big": "payload"}, timeout_s=60)
    assert out["doubled"] == 6 and out["big"] == "payload"
    assert out["parts"] == [6, 7]  # rank r got item r
    assert np.array_equal(out["gathered"]["ids"], np.arange(7))
    assert np.array_equal(out["gathered"]["pos"][:, 1], -np.arange(7))
    assert np.array_equal(out["gathered"]["z"], np.arange(7) * 10)
    # rank 0's error reaches rank 1 too: the run fails at once, not at a timeout
    with pytest.raises(RankFailure, match="negative value -5"):
        run_on_ranks(_rank_body, 2, -5, timeout_s=60)


def _scatter_body(comm, value: int):
    return root_scatter(comm, _parts_on_root, value, comm.world_size)


@pytest.mark.distributed
def test_two_ranks_share_a_root_scatter_error():
    with pytest.raises(RankFailure, match="negative value -2"):
        run_on_ranks(_scatter_body, 2, -2, timeout_s=60)
