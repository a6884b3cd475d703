"""Subcommands of the ``atomshard`` program (see :mod:`atomshard.cli`), one module each.

The ``--repeat`` syntax is public for the CLI and for scripts (``benchmarks/``) that take
the same option: :func:`join_repeat_values` (``--repeat A B C`` as one value) and
:func:`parse_repeat` (the text as a ``(a, b, c)`` tuple).
"""

from atomshard.commands._common import join_repeat_values, parse_repeat

__all__ = ["join_repeat_values", "parse_repeat"]
