"""Physical constants in atomshard's units (Å, eV, fs, amu, K): the one place they are typed.

Every other module imports its conversion factors from here. ``KB``, ``BOHR`` and
``HARTREE`` are the CODATA 2018 values; ``EV_PER_A3_TO_GPA`` is ASE's default
``1 / ase.units.GPa`` (CODATA 2014), so pressures agree with ASE-based tools.
"""

#: Boltzmann constant, eV/K.
KB = 8.617333262e-5
#: 1 eV/(Å·amu) expressed in Å/fs²: acceleration = ACCEL * force / mass.
ACCEL = 1.0 / 103.642696562
#: Kinetic energy of 1 amu moving at 1 Å/fs, in eV (½ m v² * MVV2E).
MVV2E = 103.642696562
#: 1 eV/Å³ in GPa.
EV_PER_A3_TO_GPA = 160.21766208
#: Bohr radius in Å.
BOHR = 0.529177210903
#: Hartree energy in eV (Hartree matrices, e.g. from PySCF, are converted on read).
HARTREE = 27.211386245988
