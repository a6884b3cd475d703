"""``--ranks``, ``--partition``, ``--profile``: the graph-parallel options of a command."""

from __future__ import annotations

import argparse


def add_parallel_arguments(parser: argparse.ArgumentParser, *, profile: bool = True) -> None:
    from atomshard.runtime import PARTITION_NAMES

    group = parser.add_argument_group("graph-parallel")
    group.add_argument(
        "--ranks",
        type=int,
        default=1,
        help="spawn N local processes (gloo) and split every structure among them; under "
        "torchrun/srun leave it at 1 (default: 1)",
    )
    group.add_argument(
        "--partition",
        choices=PARTITION_NAMES,
        default="auto",
        help="how atoms are assigned to ranks (default: auto, by the communication-cost model)",
    )
    group.add_argument(
        "--transport",
        choices=("auto", "p2p", "all_to_all"),
        default="auto",
        help="halo-exchange transport (default: auto, the faster measured for the backend)",
    )
    if not profile:
        parser.set_defaults(profile=None)
        return
    group.add_argument(
        "--profile",
        metavar="JSON",
        default=None,
        help="print per-rank pack / send-recv / unpack / compute times and write them as JSON",
    )


def parallel_requested(args: argparse.Namespace) -> bool:
    """True when the command should go through the graph-parallel runtime."""
    from atomshard.comm import env_world

    world = env_world()
    return args.ranks != 1 or args.profile is not None or (world is not None and world[1] > 1)
