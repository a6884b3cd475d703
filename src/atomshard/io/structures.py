"""Structures from files (anything ASE reads) or built-in names, with clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from atomshard.errors import InputError
from atomshard.graph import Structure
from atomshard.io.amorphous import amorphous_hfo2


def _alpha_quartz():
    from ase.spacegroup import crystal

    # alpha-quartz, P3_221 (No. 154); lattice and Wyckoff positions from experiment
    # (a = 4.916 Å, c = 5.405 Å): 9 atoms per cell, so 2x2x2 = 72 and 8x8x8 = 4,608.
    # The tabulated positions (Si x,0,0; O x,y,z) use an origin shifted by c/3 from ASE's
    # setting of No. 154, where Si sits on the two-fold axis at z = 2/3.
    return crystal(
        ["Si", "O"],
        basis=[(0.4697, 0.0, 2.0 / 3.0), (0.4135, 0.2669, 0.1191 + 2.0 / 3.0)],
        spacegroup=154,
        cellpar=[4.916, 4.916, 5.405, 90, 90, 120],
    )


def _silicon():
    from ase.build import bulk

    return bulk("Si", "diamond", a=5.431, cubic=True)


def _hfo2():
    from ase.spacegroup import crystal

    # monoclinic HfO2 (baddeleyite, P2_1/c No. 14), 12 atoms per cell.
    return crystal(
        ["Hf", "O", "O"],
        basis=[(0.2759, 0.0395, 0.2084), (0.0703, 0.3320, 0.3457), (0.4482, 0.7580, 0.4792)],
        spacegroup=14,
        cellpar=[5.117, 5.175, 5.291, 90, 99.22, 90],
    )


def _water():
    from ase.build import molecule

    return molecule("H2O")


BUILTIN_STRUCTURES: dict[str, Callable] = {
    "quartz": _alpha_quartz,
    "si": _silicon,
    "hfo2": _hfo2,
    "water": _water,
    "a-hfo2": amorphous_hfo2,  # 3,000-atom random-packed amorphous-like HfO2
}


def builtin_structure(name: str, repeat: tuple[int, int, int] = (1, 1, 1)):
    """A built-in structure as :class:`ase.Atoms`, repeated ``repeat`` times."""
    try:
        atoms = BUILTIN_STRUCTURES[name.lower()]()
    except KeyError:
        raise InputError(
            f"unknown built-in structure {name!r}; choose one of {sorted(BUILTIN_STRUCTURES)}"
        ) from None
    if any(r < 1 for r in repeat):
        raise InputError(f"--repeat must be positive integers, got {repeat}")
    return atoms.repeat(repeat)


def read_structures(
    source: str | Path,
    *,
    index: str | int = ":",
    format: str | None = None,
    repeat: tuple[int, int, int] = (1, 1, 1),
) -> list:
    """Read every frame of ``source`` as validated :class:`ase.Atoms`.

    ``source`` is a file any ASE reader accepts (format guessed from the name, or
    ``format``), an n2p2 ``input.data`` file (recognised by name or ``format="n2p2"``),
    or a built-in name (:data:`BUILTIN_STRUCTURES`). Frames are validated (finite
    positions, no atoms closer than 0.1 Å, non-singular cell); the error names the file,
    the frame and the atom.
    """
    text = str(source)
    path = Path(text)
    if not path.exists():
        if text.lower() in BUILTIN_STRUCTURES:
            frames = [builtin_structure(text, repeat)]
            _validate(frames, text)
            return frames
        raise InputError(
            f"structure file {text!r} does not exist (and is not a built-in name: "
            f"{', '.join(sorted(BUILTIN_STRUCTURES))})"
        )
    if path.is_dir():
        raise InputError(f"structure path {text!r} is a directory, not a file")
    if format == "n2p2" or (format is None and path.name.startswith("input.data")):
        from atomshard.io.n2p2_data import read_n2p2_data

        frames = read_n2p2_data(path)
    else:
        frames = _ase_read(path, index=index, format=format)
    if any(r != 1 for r in repeat):
        frames = [a.repeat(repeat) for a in frames]
    _validate(frames, text)
    return frames


def _ase_read(path: Path, *, index, format: str | None) -> list:
    import ase.io

    try:
        frames = ase.io.read(str(path), index=index, format=format)
    except Exception as exc:  # ASE raises many types; the user needs the file and why
        kind = type(exc).__name__
        raise InputError(f"could not read structure file {str(path)!r}: {kind}: {exc}") from exc
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise InputError(f"structure file {str(path)!r} holds no frames")
    return frames


def _validate(frames: list, name: str) -> None:
    for f, atoms in enumerate(frames):
        label = name if len(frames) == 1 else f"{name}, frame {f}"
        Structure.from_ase(atoms, name=label)
