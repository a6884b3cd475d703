"""An ASE calculator whose work is spread over the ranks of a process group.

Launch the same script on every rank (``torchrun --nproc-per-node N script.py``); every
rank makes the same calls. Rank 0's :class:`ase.Atoms` is the one evaluated (the others
may hold a copy or a placeholder of the same length); the results — energy, per-atom
energies, forces, stress — are identical on every rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from atomshard.comm import Communicator, ExchangeProfiler, init_communicator, root_call
from atomshard.graph import Structure
from atomshard.runtime._api import ModelSpec, load_potential
from atomshard.runtime._evaluate import DistributedEvaluator, frame_result_dict
from atomshard.runtime._partition import PartitionSpec


class PotentialCalculator(Calculator):
    """What atomshard's ASE calculators share: the properties they give, and that a stress
    needs a cell periodic in all three directions. A subclass computes the results of one
    structure in ``_results`` (serially: :class:`atomshard.md.AtomshardCalculator`; over
    ranks: :class:`DistributedCalculator`)."""

    implemented_properties = [  # noqa: RUF012 (ASE's own attribute)
        "energy",
        "free_energy",
        "energies",
        "forces",
        "stress",
    ]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        periodic = bool(np.asarray(self.atoms.pbc).all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                "stress needs a cell periodic in all three directions"
            )
        self.results = self._results(self.atoms, periodic)

    def _results(self, atoms: Atoms, periodic: bool) -> dict[str, Any]:
        """ASE results (energy, free_energy, energies, forces, stress when ``periodic``)."""
        raise NotImplementedError


class DistributedCalculator(PotentialCalculator):
    """ASE calculator evaluating a potential graph-parallel over ``comm``.

    Args:
        model: a ``--model`` string or a :class:`~atomshard.models.base.Potential`
            (the same weights on every rank).
        comm: the communicator (default: :func:`atomshard.comm.init_communicator`, i.e.
            torchrun/srun variables, or serial).
        partition: ``"lownn"``, ``"metis"``, ``"grid"``, ``"auto"``, a part vector or a
            callable.
        transport: halo-exchange transport.
        profile: collect per-rank exchange timings in :attr:`profiler`.

    Stress is available for cells periodic in all three directions.
    """

    def __init__(
        self,
        model: ModelSpec,
        *,
        comm: Communicator | None = None,
        partition: PartitionSpec = "auto",
        transport: str = "auto",
        dtype: torch.dtype | None = None,
        profile: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.comm = comm if comm is not None else init_communicator()
        self.model = load_potential(model, dtype=dtype).to(self.comm.device)
        self.profiler = ExchangeProfiler() if profile else None
        self.evaluator = DistributedEvaluator(
            self.model,
            self.comm,
            partition=partition,
            transport=transport,
            profiler=self.profiler,
        )

    def _results(self, atoms: Atoms, periodic: bool) -> dict[str, Any]:
        structure = Structure.from_ase(atoms) if self.comm.rank == 0 else None
        res = self.evaluator.evaluate(structure, forces=True, stress=True)
        # rank 0 holds the per-atom arrays; every rank gets the same results
        return root_call(self.comm, frame_result_dict, res)
