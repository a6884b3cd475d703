"""``PotentialPropertyTests``: the property checks as a pytest mixin for any potential."""

from __future__ import annotations

import pytest

from atomshard.testing import _checks as checks


class PotentialPropertyTests:
    """Mix into a pytest class to run every property check on a potential.

    The class provides two fixtures:

    * ``model``: the :class:`~atomshard.models.base.Potential` under test, in float64;
    * ``property_structures``: a list of small :class:`ase.Atoms` (periodic and finite)
      of elements the model knows — :func:`default_structures` makes suitable ones.

    Class attributes tune the checks: ``reflection_invariant`` (False for SO(3)-only
    models), ``smooth_forces_at_cutoff``, and the tolerances below (absolute; eV, eV/Å,
    eV/Å³) and ``n_fd_components`` (force components checked by finite differences per
    structure). Every test names the structure and the deviation when it fails.

    Example::

        class TestMyModel(PotentialPropertyTests):
            @pytest.fixture(scope="class")
            @classmethod
            def model(cls):
                return build_my_model(dtype=torch.float64)

            @pytest.fixture(scope="class")
            @classmethod
            def property_structures(cls):
                return default_structures((8, 14), n_atoms=6)
    """

    reflection_invariant: bool = True
    smooth_forces_at_cutoff: bool = True
    atol_energy: float = 1e-9
    atol_forces: float = 1e-8
    atol_fd_forces: float = 1e-6
    n_fd_components: int = 4
    atol_fd_stress: float = 1e-7

    def test_rotation(self, model, property_structures) -> None:
        for atoms in property_structures:
            checks.check_rotation(
                model, atoms, atol_energy=self.atol_energy, atol_forces=self.atol_forces,
                atol_stress=self.atol_energy,
            )  # fmt: skip

    def test_reflection(self, model, property_structures) -> None:
        if not self.reflection_invariant:
            pytest.skip("model is SO(3)-equivariant only (no parity)")
        for atoms in property_structures:
            checks.check_rotation(
                model, atoms, reflect=True, atol_energy=self.atol_energy,
                atol_forces=self.atol_forces, atol_stress=self.atol_energy,
            )  # fmt: skip

    def test_permutation(self, model, property_structures) -> None:
        for atoms in property_structures:
            checks.check_permutation(
                model, atoms, atol_energy=self.atol_energy, atol_forces=self.atol_forces
            )

    def test_translation(self, model, property_structures) -> None:
        for atoms in property_structures:
            checks.check_translation(
                model, atoms, atol_energy=self.atol_energy, atol_forces=self.atol_forces
            )

    def test_wrapping(self, model, property_structures) -> None:
        periodic = [a for a in property_structures if a.pbc.any()]
        if not periodic:
            pytest.skip("no periodic structure among property_structures")
        for atoms in periodic:
            checks.check_wrapping(
                model, atoms, atol_energy=self.atol_energy, atol_forces=self.atol_forces
            )

    def test_forces_are_minus_energy_gradient(self, model, property_structures) -> None:
        for atoms in property_structures:
            checks.check_forces_finite_difference(
                model, atoms, n_components=self.n_fd_components, atol=self.atol_fd_forces
            )

    def test_stress_is_strain_derivative(self, model, property_structures) -> None:
        periodic = [a for a in property_structures if a.pbc.all()]
        if not periodic:
            pytest.skip("no fully periodic structure among property_structures")
        for atoms in periodic:
            checks.check_stress_finite_difference(model, atoms, atol=self.atol_fd_stress)

    def test_smooth_at_cutoff(self, model) -> None:
        z = tuple(model.atomic_numbers)
        pair = (z[0], z[-1])
        checks.check_cutoff_smoothness(
            model, pair, atol_forces=1e-4 if self.smooth_forces_at_cutoff else None
        )

    def test_fragments_add_up(self, model, property_structures) -> None:
        finite = [a for a in property_structures if not a.pbc.any()]
        if len(finite) < 1:
            pytest.skip("no finite structure among property_structures")
        second = finite[1] if len(finite) > 1 else finite[0]
        checks.check_fragments_add_up(
            model, finite[0], second, atol_energy=self.atol_energy, atol_forces=self.atol_forces
        )


def default_structures(species: tuple[int, ...], *, n_atoms: int = 6, seed: int = 0) -> list:
    """A small triclinic periodic cell and two small clusters of ``species``."""
    return [
        checks.random_structure(species, n_atoms, periodic=True, seed=seed),
        checks.random_structure(species, max(n_atoms - 2, 2), periodic=False, seed=seed + 1),
        checks.random_structure(species, max(n_atoms - 3, 2), periodic=False, seed=seed + 2),
    ]
