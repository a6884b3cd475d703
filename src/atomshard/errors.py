"""Exceptions that carry a message meant for the user.

Anything raised as an :class:`AtomshardError` is printed by the CLI as a one-line
error (no traceback) and the process exits with status 2.
"""


class AtomshardError(Exception):
    """Base class of errors whose message is complete and meant for the user."""


class InputError(AtomshardError, ValueError):
    """Bad user input: a file, a structure, a configuration value.

    The message names the offending thing (file and line, atom index, field and value).
    """


class CheckpointError(AtomshardError):
    """A checkpoint that is missing, corrupt or of an unknown format."""
