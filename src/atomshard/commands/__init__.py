"""Subcommands of the ``atomshard`` program (see :mod:`atomshard.cli`)."""
