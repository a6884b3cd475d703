"""atomshard: message-passing neural-network models of atoms, serial or graph-parallel.

The package is layered; lower layers never import higher ones::

    graph <- partition <- comm <- nn / models <- md / train <- cli

See ``atomshard.glossary`` for the words used throughout (owned, halo, src, dst, ...).
"""

from atomshard.errors import AtomshardError, InputError

__version__ = "0.1.0"

__all__ = ["AtomshardError", "InputError", "__version__"]
