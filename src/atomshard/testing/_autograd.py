"""Looking into autograd graphs from tests."""

from __future__ import annotations

import torch


def grad_fn_names(t: torch.Tensor) -> set[str]:
    """Class names of every autograd node ``t``'s graph reaches (e.g. ``"SliceBackward0"``),
    to check which kinds of backward a computation records."""
    seen, names, stack = set(), set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names
