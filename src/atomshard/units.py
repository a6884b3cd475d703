"""Physical constants in atomshard's units (Å, eV, fs, amu, K).

Values are CODATA 2018, the same ASE uses, so numbers agree with ASE-based tools.
"""

#: Boltzmann constant, eV/K.
KB = 8.617333262e-5
#: 1 eV/(Å·amu) expressed in Å/fs²: acceleration = ACCEL * force / mass.
ACCEL = 1.0 / 103.642696562
#: Kinetic energy of 1 amu moving at 1 Å/fs, in eV (½ m v² * MVV2E).
MVV2E = 103.642696562
#: 1 eV/Å³ in GPa.
EV_PER_A3_TO_GPA = 160.21766208
#: Bohr radius in Å and Hartree in eV.
BOHR = 0.529177210903
HARTREE = 27.211386245988
