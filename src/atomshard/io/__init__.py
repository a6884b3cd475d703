"""Reading and writing structures and model files."""

from atomshard.io.structures import BUILTIN_STRUCTURES, builtin_structure, read_structures

__all__ = ["BUILTIN_STRUCTURES", "builtin_structure", "read_structures"]
