"""Communication: process groups, the halo exchange, local launch. The only package that
imports ``torch.distributed``.

- :func:`init_communicator` joins a gloo/NCCL group from torchrun/srun variables (or
  arguments) and returns a communicator; :class:`NullCommunicator` is the serial one.
- :class:`HaloExchange` is the differentiable per-layer exchange of one rank's halo plan;
  ``HaloExchange.start`` posts it and returns a :class:`PendingExchange` (overlap).
- :class:`LocalGroup` / :func:`launch` start N ranks on this machine (``--ranks N``).
- :func:`exchange_rows` sends any number of rows from every rank to every other one
  (atom migration and ghost atoms at a distributed neighbour-list rebuild).
- :func:`run_on_ranks` (torchrun / spawned ranks / one process), :func:`root_call`
  (rank 0 computes, every rank returns or raises), :func:`root_scatter` (the same, one
  item per rank) and :func:`gather_by_id` (rows in global atom order on rank 0): the
  rank patterns of every multi-rank entry point.
"""

from atomshard.comm._exchange import AUTO_TRANSPORT, TRANSPORTS, HaloExchange, PendingExchange
from atomshard.comm._group import (
    DEFAULT_TIMEOUT_S,
    CommError,
    Communicator,
    NullCommunicator,
    TorchCommunicator,
    env_world,
    init_communicator,
)
from atomshard.comm._launch import LocalGroup, RankFailure, free_port, launch
from atomshard.comm._migrate import exchange_rows
from atomshard.comm._patterns import gather_by_id, root_call, root_scatter, run_on_ranks
from atomshard.comm._profile import ExchangeProfiler, ExchangeRecord

__all__ = [
    "AUTO_TRANSPORT",
    "DEFAULT_TIMEOUT_S",
    "TRANSPORTS",
    "CommError",
    "Communicator",
    "ExchangeProfiler",
    "ExchangeRecord",
    "HaloExchange",
    "LocalGroup",
    "NullCommunicator",
    "PendingExchange",
    "RankFailure",
    "TorchCommunicator",
    "env_world",
    "exchange_rows",
    "free_port",
    "gather_by_id",
    "init_communicator",
    "launch",
    "root_call",
    "root_scatter",
    "run_on_ranks",
]
