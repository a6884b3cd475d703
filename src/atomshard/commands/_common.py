"""Argument helpers shared by subcommands (model, structure, device, dtype)."""

from __future__ import annotations

import argparse

import torch

from atomshard.errors import InputError


def add_model_arguments(parser: argparse.ArgumentParser, *, default: str | None = None) -> None:
    parser.add_argument(
        "--model",
        default=default,
        required=default is None,
        help="checkpoint path, 'sevennet-0', 'sevennet:NAME_OR_PATH' or 'n2p2:FOLDER'"
        + (f" (default: {default})" if default else ""),
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default=None,
        help="network body dtype (default: the model's own, float32 for "
        "converted SevenNet models); geometry is always float64",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


def parse_repeat(text: str | None) -> tuple[int, int, int]:
    if text is None:
        return (1, 1, 1)
    parts = text.replace(",", " ").replace("x", " ").split()
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--repeat {text!r}: expected 'N' or 'NxMxK' positive integers") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) < 1:
        raise InputError(f"--repeat {text!r}: expected 'N' or 'NxMxK' positive integers")
    return (values[0], values[1], values[2])


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"--device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device!r}: CUDA is not available on this machine")
