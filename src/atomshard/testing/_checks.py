"""Physical property checks for any :class:`~atomshard.models.base.Potential`.

Each check evaluates the model through :func:`~atomshard.models.base.compute_properties`
on :class:`ase.Atoms` inputs (graphs are built at the model's cutoff) and raises
:class:`AssertionError` with a message naming the property, the structure and the
worst deviation. Run them on a float64 model: tolerances are absolute, in eV, eV/Å and
eV/Å³, and the defaults are meant for float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atomshard.graph import AtomicGraph
from atomshard.models.base import Potential, compute_properties


@dataclass
class SinglePoint:
    """One evaluation as numpy float64: energy (eV), energies ``[n]``, forces ``[n, 3]``
    (eV/Å), stress ``[3, 3]`` (eV/Å³, None when not fully periodic)."""

    energy: float
    energies: np.ndarray
    forces: np.ndarray
    stress: np.ndarray | None


def evaluate(model: Potential, atoms, *, stress: bool | None = None) -> SinglePoint:
    """Energy, per-atom energies, forces (and stress of periodic cells) of ``atoms``."""
    graph = AtomicGraph.from_ase(atoms, model.cutoff)
    want_stress = bool(atoms.pbc.all()) if stress is None else stress
    props = compute_properties(model, graph, forces=True, stress=want_stress)
    assert props.forces is not None
    return SinglePoint(
        energy=float(props.energy),
        energies=props.energies.detach().cpu().numpy().astype(np.float64),
        forces=props.forces.detach().cpu().numpy().astype(np.float64),
        stress=None if props.stress is None else props.stress.detach().cpu().numpy(),
    )


def _close(what: str, name: str, got, want, atol: float) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{what} ({name}): shape {got.shape} != {want.shape}")
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    if not err <= atol:
        raise AssertionError(
            f"{what} ({name}): max deviation {err:.3e} exceeds {atol:.1e} "
            f"(scale of values {float(np.max(np.abs(want))) if want.size else 0.0:.3e})"
        )


def _name(atoms) -> str:
    return f"{atoms.get_chemical_formula()}, pbc={atoms.pbc.tolist()}"


def random_rotation(seed: int = 0, *, reflect: bool = False) -> np.ndarray:
    """A random proper rotation ``[3, 3]`` (times a mirror when ``reflect``)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ np.diag([1.0, 1.0, -1.0])
    return q


def check_rotation(
    model: Potential,
    atoms,
    *,
    reflect: bool = False,
    seed: int = 0,
    atol_energy: float = 1e-9,
    atol_forces: float = 1e-8,
    atol_stress: float = 1e-9,
) -> None:
    """E invariant, forces ``F R^T`` and stress ``R S R^T`` under a rotation ``R``
    (an improper one when ``reflect``) applied to positions and cell."""
    rot = random_rotation(seed, reflect=reflect)
    what = "reflection" if reflect else "rotation"
    ref = evaluate(model, atoms)
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    moved.positions = atoms.positions @ rot.T
    new = evaluate(model, moved)
    name = _name(atoms)
    _close(f"energy invariance under {what}", name, new.energy, ref.energy, atol_energy)
    _close(
        f"per-atom energy invariance under {what}", name, new.energies, ref.energies, atol_energy
    )
    _close(f"force equivariance under {what}", name, new.forces, ref.forces @ rot.T, atol_forces)
    if ref.stress is not None and new.stress is not None:
        _close(
            f"stress equivariance under {what}", name, new.stress, rot @ ref.stress @ rot.T,
            atol_stress,
        )  # fmt: skip


def check_permutation(
    model: Potential, atoms, *, seed: int = 0, atol_energy: float = 1e-9, atol_forces: float = 1e-8
) -> None:
    """Reordering the atoms reorders per-atom energies and forces and keeps E and stress."""
    perm = np.random.default_rng(seed).permutation(len(atoms))
    ref = evaluate(model, atoms)
    new = evaluate(model, atoms[perm])
    name = _name(atoms)
    _close("energy invariance under permutation", name, new.energy, ref.energy, atol_energy)
    _close(
        "per-atom energies under permutation", name, new.energies, ref.energies[perm], atol_energy
    )
    _close("forces under permutation", name, new.forces, ref.forces[perm], atol_forces)
    if ref.stress is not None and new.stress is not None:
        _close("stress under permutation", name, new.stress, ref.stress, atol_energy)


def check_translation(
    model: Potential,
    atoms,
    shift: tuple[float, float, float] = (0.37, -1.21, 2.53),
    *,
    atol_energy: float = 1e-9,
    atol_forces: float = 1e-8,
) -> None:
    """Translating every atom by ``shift`` Å changes nothing."""
    ref = evaluate(model, atoms)
    moved = atoms.copy()
    moved.positions = atoms.positions + np.asarray(shift)
    new = evaluate(model, moved)
    name = _name(atoms)
    _close("energy invariance under translation", name, new.energy, ref.energy, atol_energy)
    _close("per-atom energies under translation", name, new.energies, ref.energies, atol_energy)
    _close("forces under translation", name, new.forces, ref.forces, atol_forces)


def check_wrapping(
    model: Potential, atoms, *, seed: int = 0, atol_energy: float = 1e-9, atol_forces: float = 1e-8
) -> None:
    """Moving atoms by whole lattice vectors (along periodic axes) changes nothing."""
    rng = np.random.default_rng(seed)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.any():
        raise AssertionError(f"wrapping needs a periodic structure, got {_name(atoms)}")
    ref = evaluate(model, atoms)
    moved = atoms.copy()
    images = rng.integers(-2, 3, size=(len(atoms), 3)) * pbc
    moved.positions = atoms.positions + images @ atoms.cell.array
    new = evaluate(model, moved)
    name = _name(atoms)
    _close("energy invariance under lattice wrapping", name, new.energy, ref.energy, atol_energy)
    _close(
        "per-atom energies under lattice wrapping", name, new.energies, ref.energies, atol_energy
    )
    _close("forces under lattice wrapping", name, new.forces, ref.forces, atol_forces)
    if ref.stress is not None and new.stress is not None:
        _close("stress under lattice wrapping", name, new.stress, ref.stress, atol_energy)


def check_forces_finite_difference(
    model: Potential,
    atoms,
    *,
    n_components: int = 6,
    delta: float = 1e-4,
    seed: int = 0,
    atol: float = 1e-6,
) -> None:
    """Forces equal ``-dE/dx`` by central differences (``delta`` Å) on random components."""
    rng = np.random.default_rng(seed)
    ref = evaluate(model, atoms, stress=False)
    flat = rng.choice(3 * len(atoms), size=min(n_components, 3 * len(atoms)), replace=False)
    name = _name(atoms)
    for k in flat:
        i, a = divmod(int(k), 3)
        energies = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[i, a] += sign * delta
            energies.append(evaluate(model, moved, stress=False).energy)
        numeric = -(energies[0] - energies[1]) / (2 * delta)
        _close(f"force on atom {i} axis {a} = -dE/dx", name, ref.forces[i, a], numeric, atol)


def check_stress_finite_difference(
    model: Potential, atoms, *, delta: float = 1e-5, atol: float = 1e-7
) -> None:
    """Stress equals ``(1/V) dE/dε`` by central differences of a symmetric strain ``ε``."""
    if not atoms.pbc.all():
        raise AssertionError(f"stress needs a fully periodic structure, got {_name(atoms)}")
    ref = evaluate(model, atoms, stress=True)
    assert ref.stress is not None
    volume = atoms.get_volume()
    numeric = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            energies = []
            for sign in (1.0, -1.0):
                eps = np.zeros((3, 3))
                eps[a, b] += 0.5 * sign * delta
                eps[b, a] += 0.5 * sign * delta
                deform = np.eye(3) + eps
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ deform, scale_atoms=False)
                strained.positions = atoms.positions @ deform
                energies.append(evaluate(model, strained, stress=False).energy)
            numeric[a, b] = numeric[b, a] = (energies[0] - energies[1]) / (2 * delta) / volume
    _close("stress = (1/V) dE/dε", _name(atoms), ref.stress, numeric, atol)


def check_cutoff_smoothness(
    model: Potential,
    species: tuple[int, int],
    *,
    eps: float = 1e-7,
    atol_energy: float = 1e-8,
    atol_forces: float | None = 1e-4,
) -> None:
    """A dimer crossing the cutoff: energy (and, if ``atol_forces``, force) is continuous
    at ``r_c`` and equals that of the two isolated atoms just beyond it."""
    from ase import Atoms

    rc = float(model.cutoff)

    def dimer(r: float) -> Atoms:
        return Atoms(numbers=list(species), positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])

    inside = evaluate(model, dimer(rc - eps))
    outside = evaluate(model, dimer(rc + eps))
    far = evaluate(model, dimer(rc + 10.0))
    name = f"dimer Z={species}"
    _close("energy continuity at the cutoff", name, inside.energy, outside.energy, atol_energy)
    _close("energy just beyond the cutoff = isolated atoms", name, outside.energy, far.energy, 0.0)
    if atol_forces is not None:
        _close("force continuity at the cutoff", name, inside.forces, outside.forces, atol_forces)


def check_fragments_add_up(
    model: Potential,
    first,
    second,
    *,
    gap: float | None = None,
    atol_energy: float = 1e-9,
    atol_forces: float = 1e-8,
) -> None:
    """Two finite fragments farther apart than the cutoff: E = E_1 + E_2, forces unchanged."""
    from ase import Atoms

    first = Atoms(numbers=first.numbers, positions=first.positions)
    second = Atoms(numbers=second.numbers, positions=second.positions)
    gap = float(model.cutoff) + 1.0 if gap is None else gap
    offset = first.positions[:, 0].max() - second.positions[:, 0].min() + gap
    moved = second.copy()
    moved.positions = second.positions + np.array([offset, 0.0, 0.0])
    both = first + moved
    e1, e2, e12 = evaluate(model, first), evaluate(model, moved), evaluate(model, both)
    name = f"{first.get_chemical_formula()} + {second.get_chemical_formula()}"
    _close("fragments add up: energy", name, e12.energy, e1.energy + e2.energy, atol_energy)
    _close(
        "fragments add up: per-atom energies", name, e12.energies,
        np.concatenate([e1.energies, e2.energies]), atol_energy,
    )  # fmt: skip
    _close(
        "fragments add up: forces", name, e12.forces, np.concatenate([e1.forces, e2.forces]),
        atol_forces,
    )  # fmt: skip


def random_structure(
    species: tuple[int, ...],
    n_atoms: int,
    *,
    periodic: bool = True,
    density: float = 0.06,
    min_distance: float = 1.6,
    triclinic: bool = True,
    seed: int = 0,
):
    """Random atoms (``density`` atoms/Å³, pairwise ≥ ``min_distance`` Å) of ``species``.

    Periodic: a random (triclinic) cell; otherwise a cluster in vacuum.
    """
    from ase import Atoms

    rng = np.random.default_rng(seed)
    length = (n_atoms / density) ** (1.0 / 3.0)
    cell = np.eye(3) * length
    if triclinic:
        cell = cell + rng.uniform(-0.15, 0.15, size=(3, 3)) * length
    numbers = [species[i % len(species)] for i in range(n_atoms)]
    for _attempt in range(20):
        atoms = Atoms(cell=cell, pbc=periodic)
        for z in numbers:  # random sequential insertion
            for _try in range(2000):
                trial = atoms + Atoms(numbers=[z], cell=cell, pbc=periodic)
                trial.positions[-1] = rng.uniform(size=3) @ cell
                if len(atoms) == 0:
                    break
                d = trial.get_distances(len(atoms), list(range(len(atoms))), mic=periodic)
                if d.min() >= min_distance:
                    break
            else:
                break
            atoms = trial
        if len(atoms) == n_atoms:
            if not periodic:
                atoms.set_cell(np.zeros((3, 3)))
            return atoms
    raise RuntimeError(f"could not place {n_atoms} atoms {min_distance} Å apart")
