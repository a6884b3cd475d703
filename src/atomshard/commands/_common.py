"""Argument helpers shared by subcommands (model, device, ``--dtype``, ``--repeat``).

Imports no torch, so ``cli`` can use it before the process is configured.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from atomshard.errors import InputError

#: The ``--dtype`` choices of every command.
DTYPE_CHOICES = ("float32", "float64")
_REPEAT_FORMS = "expected 'N', 'AxBxC' or 'A B C' positive integers"


def add_model_arguments(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    parser.add_argument(
        "--model",
        default=default,
        required=default is None,
        help="checkpoint path, 'sevennet-0', 'sevennet:NAME_OR_PATH' or 'n2p2:FOLDER'"
        + (f" (default: {default})" if default else ""),
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_dtype_argument(parser)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


def add_dtype_argument(parser: argparse.ArgumentParser, *, float64_alias: bool = False) -> None:
    """``--dtype float32|float64``, the one dtype flag (``args.dtype``: a name or None).

    ``float64_alias`` also accepts the deprecated ``--float64`` as ``--dtype float64``.
    """
    parser.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default=None,
        help="network body dtype (default: the model's own, float32 for "
        "converted SevenNet models); geometry is always float64",
    )
    if float64_alias:
        parser.add_argument(
            "--float64",
            action=_DeprecatedFloat64,
            dest="dtype",
            help="deprecated: use --dtype float64",
        )


class _DeprecatedFloat64(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"atomshard: {option_string} is deprecated, use --dtype float64", file=sys.stderr)
        setattr(namespace, self.dest, "float64")


def add_repeat_argument(parser: argparse.ArgumentParser | Any, *, help: str) -> None:
    """``--repeat``, one syntax in every command: ``N`` (N x N x N), ``AxBxC`` or ``A B C``.

    ``args.repeat`` is the text (or None); :func:`parse_repeat` turns it into a tuple.
    ``A B C`` as three words is joined by :func:`join_repeat_values` before parsing.
    """
    parser.add_argument(
        "--repeat", default=None, metavar="N|AxBxC|A B C", help=f"{help} (N means NxNxN)"
    )


def join_repeat_values(argv: list[str]) -> list[str]:
    """``argv`` with ``--repeat A B C`` (three integer words) made one value ``"A B C"``.

    ``--repeat`` then stays a one-value option, so positional arguments after it are
    never taken for repeat counts.
    """
    out: list[str] = []
    k = 0
    while k < len(argv):
        word = argv[k]
        out.append(word)
        k += 1
        if word == "--":
            out.extend(argv[k:])
            break
        counts = argv[k : k + 3]
        if word == "--repeat" and len(counts) == 3 and all(w.isdigit() for w in counts):
            out.append(" ".join(counts))
            k += 3
    return out


def parse_repeat(text: str | None) -> tuple[int, int, int]:
    """``(a, b, c)`` of a ``--repeat`` value: ``"N"``, ``"AxBxC"``, ``"A B C"`` or ``"A,B,C"``;
    None means ``(1, 1, 1)``.

    Raises:
        InputError: not one or three positive integers; the message names the value.
    """
    if text is None:
        return (1, 1, 1)
    parts = text.replace(",", " ").replace("x", " ").split()
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--repeat {text!r}: {_REPEAT_FORMS}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) < 1:
        raise InputError(f"--repeat {text!r}: {_REPEAT_FORMS}")
    return (values[0], values[1], values[2])


def check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"--device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device!r}: CUDA is not available on this machine")
