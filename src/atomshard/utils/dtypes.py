"""Floating-point dtype names (configs, YAML, the ``--dtype`` flag) to :class:`torch.dtype`.

Configs and command lines carry dtypes as plain strings so they stay YAML- and
``weights_only``-safe; :func:`parse_dtype` is the one place those strings become torch
dtypes, with an :class:`~atomshard.errors.InputError` that names the bad value.

>>> parse_dtype("float64")
torch.float64
>>> parse_dtype(None) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import torch

from atomshard.errors import InputError

__all__ = ["DTYPE_NAMES", "parse_dtype"]

#: Names :func:`parse_dtype` accepts, with the dtype each one means.
_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
#: Every accepted dtype name.
DTYPE_NAMES: tuple[str, ...] = tuple(_DTYPES)


@overload
def parse_dtype(
    name: str, *, allowed: Sequence[str] = DTYPE_NAMES, what: str = "dtype"
) -> torch.dtype: ...
@overload
def parse_dtype(
    name: None, *, allowed: Sequence[str] = DTYPE_NAMES, what: str = "dtype"
) -> None: ...
def parse_dtype(
    name: str | None, *, allowed: Sequence[str] = DTYPE_NAMES, what: str = "dtype"
) -> torch.dtype | None:
    """The :class:`torch.dtype` called ``name`` (``None`` stays ``None``: "the default").

    Args:
        name: ``"float32"``, ``"float64"``, ``"bfloat16"`` or ``"float16"``, or None
        allowed: the names this caller accepts (a subset of :data:`DTYPE_NAMES`)
        what: how the value is named in the error (a config field or a flag)

    Raises:
        InputError: ``name`` is not one of ``allowed``; the message names the value.
    """
    if name is None:
        return None
    if not isinstance(name, str) or name not in allowed or name not in _DTYPES:
        raise InputError(f"{what} {name!r}: expected one of {', '.join(allowed)}")
    return _DTYPES[name]
