"""The Ziegler–Biersack–Littmark (ZBL) screened nuclear repulsion between atom pairs.

``E(r) = k_e Z_i Z_j / r * φ(r / a)``, ``a = 0.46850 / (Z_i^0.23 + Z_j^0.23)`` Å, with the
universal screening function ``φ(x) = Σ_k c_k exp(d_k x)`` (the constants of LAMMPS'
``pair_zbl``), multiplied by the model's polynomial cutoff envelope so that it vanishes
smoothly at the model's cutoff (as nequip's ZBL term does). Each directed edge carries
half of its pair's energy, so both atoms of a pair get half.
"""

from __future__ import annotations

import torch

#: ``e^2 / (4 π ε_0)`` in eV·Å (LAMMPS' ``metal`` units value)
COULOMB_EV_ANGSTROM = 14.399645
_A0 = 0.46850
_P = 0.23
_C = (0.02817, 0.28022, 0.50986, 0.18175)
_D = (-0.20162, -0.40290, -0.94229, -3.19980)


def zbl_edge_energies(r: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
    """Half the ZBL energy of each pair (eV), without the cutoff envelope.

    Shapes:
        r: ``[n_edges]`` Å (positive); z_i, z_j: ``[n_edges]`` atomic numbers (float, the
        dtype of ``r``); returns ``[n_edges]``
    """
    x = (torch.pow(z_i, _P) + torch.pow(z_j, _P)) * r / _A0
    phi = (
        _C[0] * torch.exp(_D[0] * x)
        + _C[1] * torch.exp(_D[1] * x)
        + _C[2] * torch.exp(_D[2] * x)
        + _C[3] * torch.exp(_D[3] * x)
    )
    return (0.5 * COULOMB_EV_ANGSTROM) * (z_i * z_j / r) * phi
