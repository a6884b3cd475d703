"""sevenn's own model as the reference our SevenNet import is tested against.

Only tests and benchmarks use this module; it imports ``sevenn`` (the optional
``atomshard[sevennet]`` extra) when called. sevenn's ASE calculator runs in float32;
for a float64 reference the same sevenn model is cast to float64 and fed a float64
graph built by sevenn's own graph builder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atomshard.testing._checks import SinglePoint


class SevenNetReference:
    """Evaluate structures with sevenn's model for a SevenNet checkpoint.

    Args:
        checkpoint: path of the SevenNet checkpoint (see
            :func:`~atomshard.models.potential.sevennet.find_sevennet_checkpoint`).
        dtype: ``torch.float32`` (sevenn's calculator as shipped) or ``torch.float64``.
    """

    def __init__(self, checkpoint: str | Path, *, dtype: torch.dtype = torch.float64) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sevenn.calculator import SevenNetCalculator

            self.calc = SevenNetCalculator(str(checkpoint), device="cpu")
        self.dtype = dtype
        if dtype == torch.float64:
            import sevenn._keys as keys

            self.calc.model.double()

            def one_hot_to_float64(module, inputs, out):
                # sevenn builds its one-hot embedding as float32 whatever the model dtype
                out[keys.NODE_FEATURE] = out[keys.NODE_FEATURE].double()
                out[keys.NODE_ATTR] = out[keys.NODE_ATTR].double()
                return out

            self.calc.model._modules["onehot_idx_to_onehot"].register_forward_hook(
                one_hot_to_float64
            )
        elif dtype != torch.float32:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")

    def __call__(self, atoms) -> SinglePoint:
        """Energy (eV), per-atom energies, forces (eV/Å), stress ``[3, 3]`` (eV/Å³)."""
        from ase.stress import voigt_6_to_full_3x3_stress

        if self.dtype == torch.float32:
            atoms = atoms.copy()
            atoms.calc = self.calc
            self.calc.calculate(atoms, ["energy", "forces", "stress"])
            results = self.calc.results
        else:
            import sevenn._keys as keys
            from sevenn.atom_graph_data import AtomGraphData
            from sevenn.train.dataload import unlabeled_atoms_to_graph
            from sevenn.util import dtype_correct

            raw = unlabeled_atoms_to_graph(atoms, self.calc.cutoff)
            data = {
                k: v if k == keys.INFO else dtype_correct(v, float_dtype=torch.float64)
                for k, v in raw.items()
            }
            results = self.calc.output_to_results(self.calc.model(AtomGraphData(**data)))
        stress = None
        if bool(np.all(atoms.pbc)):
            stress = voigt_6_to_full_3x3_stress(np.asarray(results["stress"], dtype=np.float64))
        return SinglePoint(
            energy=float(results["energy"]),
            energies=np.asarray(results["energies"], dtype=np.float64),
            forces=np.asarray(results["forces"], dtype=np.float64),
            stress=stress,
        )


def parity_structures(seed: int = 0) -> dict[str, object]:
    """The structures the SevenNet parity is checked on (small: 6–12 atoms).

    alpha-quartz (9 atoms, rattled), an amorphous-like SiO2 (12 atoms, random packing at
    2.2 g/cm³, atoms ≥ 1.5 Å apart), monoclinic HfO2 (12 atoms, rattled), a one-cell
    quartz slab with 6 Å of vacuum (9 atoms, periodic in x, y only), and a small
    triclinic Si–O cell (6 atoms).
    """
    from atomshard.io.structures import builtin_structure
    from atomshard.testing._checks import random_structure

    quartz = builtin_structure("quartz")
    quartz.rattle(0.03, seed=seed)
    amorphous = random_structure(
        (14, 8, 8), 12, periodic=True, density=24 / 363.0, min_distance=1.5, triclinic=False,
        seed=seed,
    )  # fmt: skip
    hfo2 = builtin_structure("hfo2")
    hfo2.rattle(0.03, seed=seed + 1)
    slab = builtin_structure("quartz")
    slab.center(vacuum=6.0, axis=2)
    slab.pbc = (True, True, False)
    slab.rattle(0.02, seed=seed + 2)
    triclinic = random_structure(
        (14, 8, 8), 6, periodic=True, density=0.065, min_distance=1.5, seed=seed + 3
    )
    return {
        "quartz": quartz,
        "amorphous-SiO2": amorphous,
        "HfO2": hfo2,
        "quartz-slab": slab,
        "triclinic-SiO2": triclinic,
    }
