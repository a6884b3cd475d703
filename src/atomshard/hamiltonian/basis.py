"""Orbital bases and the package's one real-spherical-harmonic (l, m) convention.

**Our convention (e3nn's).** Inside a shell of angular momentum ``l`` the ``2l+1``
orbitals are e3nn's real spherical harmonics ``Y_l^m``, ``m = -l..l``, which use ``y`` as
the polar axis. They transform as ``Y_l(R r) = D_l(R) Y_l(r)`` with
:func:`atomshard.nn.wigner.wigner_D_from_matrix`, so for a rotated structure every
orbital block becomes ``H'_ij = D_{l_i} H_ij D_{l_j}^T``.

* ``l = 0``: s
* ``l = 1``: ``(px, py, pz)`` -- the same order as PySCF's p shells
* ``l = 2``: ``(xz, xy, y² - (x²+z²)/2, yz, (z² - x²)/2)`` up to positive normalisation

**Other codes** use the "standard" real harmonics with ``z`` as the polar axis, ordered
``m = -l..l`` (d: ``xy, yz, z², xz, x²-y²``). Because e3nn's ``Y(x, y, z)`` equals the
standard ``Y(z, x, y)``, the change of basis from standard to ours is the Wigner-D of the
cyclic permutation ``P r = (z, x, y)``: ``ours = D_l(P) @ standard`` (computed from e3nn,
not typed in). Conventions known here:

* ``"e3nn"`` -- ours (identity).
* ``"standard"`` / ``"deeptb"`` -- z-polar, ``m = -l..l`` for every ``l`` (DeePTB's p is
  ``(py, pz, px)``; checked on the Si64 overlap blocks, whose s-p row points along the bond).
* ``"pyscf"`` -- standard, except p shells are ``(px, py, pz)`` (PySCF's ``cart=False``
  order; checked against PySCF's own AO values and its ``Dmatrix`` in the tests).

Orbitals of an atom are ordered shell by shell as listed in the basis; atoms follow one
another in index order, so a full matrix has ``sum_i n_orbitals(Z_i)`` rows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from atomshard.errors import InputError
from atomshard.nn.wigner import wigner_D_from_matrix

__all__ = [
    "CONVENTIONS",
    "OrbitalBasis",
    "convention_matrix",
    "parse_shells",
]

#: orbital conventions that :func:`convention_matrix` converts from
CONVENTIONS = ("e3nn", "standard", "deeptb", "pyscf")
_LETTERS = "spdfghi"
#: standard(z-polar) -> e3nn(y-polar) relabelling of axes: P r = (z, x, y)
_P = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@functools.cache
def _standard_to_e3nn(l: int) -> np.ndarray:
    return wigner_D_from_matrix(l, torch.tensor(_P, dtype=torch.float64)).numpy()


def convention_matrix(l: int, convention: str) -> np.ndarray:
    """Orthogonal ``Q`` with ``ours = Q @ theirs`` for one shell of degree ``l``.

    A block in another convention converts as ``H_ours = Q_a H_theirs Q_b^T``.

    Shapes:
        returns: ``[2l+1, 2l+1]`` float64
    """
    if convention not in CONVENTIONS:
        raise InputError(f"unknown orbital convention {convention!r}; known: {CONVENTIONS}")
    if l < 0:
        raise InputError(f"angular momentum must be >= 0, got l={l}")
    if convention == "e3nn" or l == 0 or (convention == "pyscf" and l == 1):
        return np.eye(2 * l + 1)
    return _standard_to_e3nn(l).copy()


def parse_shells(spec: str | Sequence[int], *, where: str = "basis") -> tuple[int, ...]:
    """Shell angular momenta from ``"2s2p1d"`` (DeePTB style), ``"spd"`` or ``[0, 0, 1]``."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if not text or not re.fullmatch(r"(\d*[spdfghi])+", text):
            raise InputError(f"{where}: cannot parse shells {spec!r} (expected e.g. '2s2p1d')")
        out: list[int] = []
        for count, letter in re.findall(r"(\d*)([spdfghi])", text):
            out += [_LETTERS.index(letter)] * (int(count) if count else 1)
        return tuple(out)
    try:
        ls = tuple(int(v) for v in spec)
    except (TypeError, ValueError):
        raise InputError(f"{where}: shells must be a string or a list of l, got {spec!r}") from None
    if not ls or min(ls) < 0:
        raise InputError(f"{where}: shells must be a non-empty list of l >= 0, got {spec!r}")
    return ls


def _symbol(key: str | int, where: str) -> str:
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        z = int(key)
        if not 0 < z < len(chemical_symbols):
            raise InputError(f"{where}: unknown atomic number {key!r}")
        return chemical_symbols[z]
    if key not in atomic_numbers:
        raise InputError(f"{where}: unknown element {key!r}")
    return str(key)


@dataclass(frozen=True, kw_only=True)
class OrbitalBasis:
    """Per-element shells: ``{"O": (0, 0, 1, 1, 2), "H": (0, 0, 1)}`` (l of each shell).

    Accepts DeePTB-style strings (``{"Si": "1s1p"}``) and atomic numbers as keys.
    """

    shells: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.shells, Mapping) or not self.shells:
            raise InputError(f"basis.shells must be a non-empty mapping, got {self.shells!r}")
        norm = {
            _symbol(k, "basis.shells"): parse_shells(v, where=f"basis.shells[{k!r}]")
            for k, v in self.shells.items()
        }
        object.__setattr__(self, "shells", dict(sorted(norm.items())))

    @classmethod
    def from_spec(cls, spec: Mapping[str, str | Sequence[int]]) -> OrbitalBasis:
        return cls(shells=dict(spec))  # type: ignore[arg-type]

    @classmethod
    def from_pyscf(cls, mol) -> OrbitalBasis:  # type: ignore[no-untyped-def]
        """Shells of a PySCF ``Mole`` (spherical), contractions expanded in AO order."""
        per_atom: dict[int, list[int]] = {}
        for b in range(mol.nbas):
            ls = [int(mol.bas_angular(b))] * int(mol.bas_nctr(b))
            per_atom.setdefault(int(mol.bas_atom(b)), []).extend(ls)
        return cls._from_per_atom(
            [mol.atom_pure_symbol(i) for i in range(mol.natm)], per_atom, "PySCF molecule"
        )

    @classmethod
    def from_ao_labels(cls, symbols: Sequence[str], ao_labels: Sequence[str]) -> OrbitalBasis:
        """Shells from PySCF ``mol.ao_labels()`` strings like ``"0 O 2px"`` or ``"1 H 1s"``."""
        per_atom: dict[int, list[int]] = {}
        counts: dict[int, list[int]] = {}
        for text in ao_labels:
            parts = str(text).split()
            if len(parts) < 3 or not re.match(r"\d+[spdfghi]", parts[2]):
                raise InputError(f"cannot parse AO label {text!r}")
            atom, l = int(parts[0]), _LETTERS.index(re.match(r"\d+([spdfghi])", parts[2])[1])  # type: ignore[index]
            pending = counts.setdefault(atom, [])
            if pending and pending[0] == l and pending[1] < 2 * l + 1:
                pending[1] += 1
            else:
                if pending and pending[1] != 2 * pending[0] + 1:
                    raise InputError(f"AO labels of atom {atom}: incomplete shell before {text!r}")
                pending[:] = [l, 1]
                per_atom.setdefault(atom, []).append(l)
        return cls._from_per_atom(list(symbols), per_atom, "AO labels")

    @classmethod
    def _from_per_atom(
        cls, symbols: list[str], per_atom: dict[int, list[int]], where: str
    ) -> OrbitalBasis:
        shells: dict[str, tuple[int, ...]] = {}
        for i, sym in enumerate(symbols):
            ls = tuple(per_atom.get(i, ()))
            if sym in shells and shells[sym] != ls:
                raise InputError(
                    f"{where}: atom {i} ({sym}) has shells {ls}, another {sym} "
                    f"atom has {shells[sym]}; one basis per element is required"
                )
            shells[sym] = ls
        return cls(shells=shells)

    @property
    def elements(self) -> tuple[int, ...]:
        """Atomic numbers this basis covers, ascending."""
        return tuple(sorted(atomic_numbers[s] for s in self.shells))

    @property
    def l_max(self) -> int:
        return max(max(ls) for ls in self.shells.values())

    def shell_ls(self, z: int) -> tuple[int, ...]:
        """Angular momenta of the shells of element ``z`` (atomic number)."""
        try:
            return self.shells[chemical_symbols[int(z)]]
        except (KeyError, IndexError):
            raise InputError(
                f"element {chemical_symbols[int(z)] if 0 < int(z) < 119 else z} "
                f"has no entry in the orbital basis (known: {list(self.shells)})"
            ) from None

    def n_orbitals(self, z: int) -> int:
        return sum(2 * l + 1 for l in self.shell_ls(z))

    def check_species(self, species: np.ndarray | torch.Tensor, *, name: str = "structure") -> None:
        """Raise :class:`InputError` naming the first atom whose element has no basis entry."""
        for i, z in enumerate(np.asarray(species).tolist()):
            if chemical_symbols[int(z)] not in self.shells:
                raise InputError(
                    f"{name}: atom {i} is {chemical_symbols[int(z)]} (Z={z}), which "
                    f"has no entry in the orbital basis (known: {list(self.shells)})"
                )

    def offsets(self, species: np.ndarray | torch.Tensor) -> np.ndarray:
        """First orbital of every atom in the full matrix, plus the total at the end.

        Shapes:
            species: ``[n_atoms]`` atomic numbers
            returns: ``[n_atoms + 1]`` int64
        """
        self.check_species(species)
        sizes = [self.n_orbitals(int(z)) for z in np.asarray(species).tolist()]
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

    def transform(self, z: int, convention: str) -> np.ndarray:
        """Block-diagonal ``Q`` over the shells of ``z``: ``ours = Q @ theirs``.

        Shapes:
            returns: ``[n_orbitals(z), n_orbitals(z)]`` float64
        """
        n = self.n_orbitals(z)
        q = np.zeros((n, n))
        o = 0
        for l in self.shell_ls(z):
            q[o : o + 2 * l + 1, o : o + 2 * l + 1] = convention_matrix(l, convention)
            o += 2 * l + 1
        return q

    def wigner(self, z: int, rotation: np.ndarray | torch.Tensor) -> np.ndarray:
        """Block-diagonal Wigner-D over the shells of ``z``: ``H'_ij = D_i H_ij D_j^T``.

        Shapes:
            rotation: ``[3, 3]`` float64, proper
            returns: ``[n_orbitals(z), n_orbitals(z)]`` float64
        """
        rot = torch.as_tensor(np.asarray(rotation), dtype=torch.float64)
        n = self.n_orbitals(z)
        d = np.zeros((n, n))
        o = 0
        for l in self.shell_ls(z):
            d[o : o + 2 * l + 1, o : o + 2 * l + 1] = wigner_D_from_matrix(l, rot).numpy()
            o += 2 * l + 1
        return d

    def convert_block(self, block: np.ndarray, zi: int, zj: int, convention: str) -> np.ndarray:
        """Orbital block ``<i|H|j>`` from ``convention`` to ours (``Q_i B Q_j^T``).

        Shapes:
            block: ``[..., n_orbitals(zi), n_orbitals(zj)]``
        """
        self.check_block_shape(block, zi, zj)
        return self.transform(zi, convention) @ block @ self.transform(zj, convention).T

    def convert_matrix(
        self, matrix: np.ndarray, species: np.ndarray, convention: str, *, inverse: bool = False
    ) -> np.ndarray:
        """Full ``[n_orb, n_orb]`` matrix from ``convention`` to ours (or back, ``inverse``)."""
        offs = self.offsets(species)
        if matrix.shape[-2:] != (offs[-1], offs[-1]):
            raise InputError(
                f"matrix of shape {matrix.shape} does not match the basis: the "
                f"structure has {offs[-1]} orbitals"
            )
        q = np.zeros((offs[-1], offs[-1]))
        for i, z in enumerate(np.asarray(species).tolist()):
            q[offs[i] : offs[i + 1], offs[i] : offs[i + 1]] = self.transform(int(z), convention)
        if inverse:
            q = q.T
        return q @ matrix @ q.T

    def check_block_shape(self, block: np.ndarray, zi: int, zj: int, *, where: str = "") -> None:
        want = (self.n_orbitals(zi), self.n_orbitals(zj))
        if tuple(block.shape[-2:]) != want:
            raise InputError(
                f"{where + ': ' if where else ''}block of shape {tuple(block.shape)} does not "
                f"match the basis ({chemical_symbols[int(zi)]}-{chemical_symbols[int(zj)]} "
                f"blocks are {want[0]}x{want[1]})"
            )
