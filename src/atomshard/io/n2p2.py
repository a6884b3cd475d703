"""Reader for n2p2 potential folders: ``input.nn``, ``scaling.data``, ``weights.ZZZ.data``.

The reader turns the files into plain, validated Python data (:class:`N2P2Potential`);
:mod:`atomshard.models.bpnn` builds the torch model from it. Everything stays in the
potential's own units (n2p2 is unit-agnostic); :class:`N2P2Units` records what those
units are in Å and eV so the model can convert explicitly.

Units are taken, in this order, from the caller, from the comment lines
``# Length unit : Bohr`` / ``# Energy unit : Ha`` that n2p2's examples carry in
``input.nn``, or else assumed to be Å and eV (like LAMMPS ``pair_style nnp`` with
``cflength 1 cfenergy 1``); :attr:`N2P2Units.source` says which.

Supported ``input.nn`` keywords (all others that change a prediction raise
:class:`~atomshard.errors.InputError` naming keyword, file and line; n2p2's training and
output keywords are ignored): ``number_of_elements``, ``elements``, ``cutoff_type``
(0-8 with alpha), ``scale_symmetry_functions``, ``scale_symmetry_functions_sigma``,
``center_symmetry_functions``, ``scale_min_short``, ``scale_max_short``,
``global_hidden_layers_short``, ``global_nodes_short``, ``global_activation_short``,
``symfunction_short`` (types 2, 3, 9, 12, 13, 20-25), ``mean_energy``, ``conv_energy``,
``conv_length``, ``atom_energy``, ``nnp_type 1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atomshard.errors import InputError
from atomshard.units import BOHR, HARTREE

LENGTH_UNITS = {"angstrom": 1.0, "a": 1.0, "ang": 1.0, "bohr": BOHR, "nm": 10.0}
ENERGY_UNITS = {
    "ev": 1.0,
    "hartree": HARTREE,
    "ha": HARTREE,
    "ry": HARTREE / 2,
    "rydberg": HARTREE / 2,
    "mev": 1e-3,
}

#: n2p2 activation letters understood by the model.
ACTIVATIONS = frozenset("ltsprgcSeh")
#: Cutoff types (n2p2 ``CutoffFunction::CutoffType``): 0 hard .. 8 poly4.
CUTOFF_TYPES = frozenset(range(9))
SF_TYPES = frozenset({2, 3, 9, 12, 13, 20, 21, 22, 23, 24, 25})
#: Compact-function core subtypes (``p1``..``p4``, suffix ``a`` = asymmetric radial part).
_SUBTYPE = re.compile(r"^p([1-4])(a?)$")

#: Keywords read by n2p2's training and tools only; they never change a prediction.
_IGNORED = frozenset(
    """random_seed epochs updater_type parallel_mode jacobian_mode update_strategy
    selection_mode memorize_symfunc_results task_batch_size_energy task_batch_size_force
    test_fraction use_short_forces force_weight short_energy_fraction short_force_fraction
    short_energy_error_threshold short_force_error_threshold rmse_threshold
    rmse_threshold_trials weights_min weights_max main_error_metric write_trainpoints
    write_trainforces write_weights_epoch write_neuronstats write_trainlog gradient_type
    gradient_eta gradient_adam_eta gradient_adam_beta1 gradient_adam_beta2
    gradient_adam_epsilon kalman_type kalman_epsilon kalman_q0 kalman_qtau kalman_qmin
    kalman_eta kalman_etatau kalman_etamax kalman_lambda_short kalman_nue_short
    nguyen_widrow_weights_short precondition_weights repeated_energy_update
    use_old_weights_short write_symfunctions normalize_data_set use_short_nn
    number_of_threads write_train_points force_energy_ratio remove_atom_energies
    symfunction_correlation rmse_threshold_energy rmse_threshold_force
    calculate_forces write_structures freeze_weights""".split()
)


@dataclass(frozen=True)
class N2P2Units:
    """The potential's units expressed in Å and eV, and where that knowledge came from."""

    length: float = 1.0
    energy: float = 1.0
    source: str = "assumed"

    @classmethod
    def parse(cls, length: str | float, energy: str | float, source: str) -> N2P2Units:
        return cls(
            _unit(length, LENGTH_UNITS, "length"), _unit(energy, ENERGY_UNITS, "energy"), source
        )


def _unit(value: str | float, table: dict[str, float], what: str) -> float:
    if isinstance(value, (int, float)):
        if not value > 0:
            raise InputError(f"{what} unit factor must be positive, got {value!r}")
        return float(value)
    key = str(value).strip().lower().replace("å", "a")
    if key not in table:
        raise InputError(f"unknown {what} unit {value!r}; choose one of {sorted(table)}")
    return table[key]


@dataclass(frozen=True)
class SymmetryFunction:
    """One ``symfunction_short`` line, with elements as indices into the sorted element list.

    Lengths (``eta`` in 1/length², ``rs``, ``rc``, ``rl``) are in the potential's units;
    angles in degrees. Unused fields keep their defaults.
    """

    center: int
    type: int
    e1: int = -1
    e2: int = -1
    eta: float = 0.0
    rs: float = 0.0
    rc: float = 0.0
    lam: float = 0.0
    zeta: float = 0.0
    rl: float = 0.0
    angle_left: float = 0.0
    angle_right: float = 0.0
    subtype: str = ""
    line: int = 0

    @property
    def angular(self) -> bool:
        return self.type not in (2, 12, 20, 23)

    @property
    def compact(self) -> bool:
        return self.type >= 20

    @property
    def weighted(self) -> bool:
        return self.type in (12, 13, 23, 24, 25)

    def sort_key(self) -> tuple:
        """n2p2's order of symmetry functions of one element (NN input, scaling.data rows)."""
        t = self.type
        if t in (2, 12):
            rest: tuple = (self.rc, self.eta, self.rs, self.e1)
        elif t in (3, 9, 13):
            rest = (self.rc, self.eta, self.rs, self.zeta, self.lam, self.e1, self.e2)
        elif t in (20, 23):
            rest = (self.subtype, self.e1, self.rc, self.rl)
        else:
            rest = (
                self.subtype,
                self.e1,
                self.e2,
                self.rc,
                self.rl,
                self.angle_left,
                self.angle_right,
            )
        return (t, *rest)


@dataclass
class N2P2Settings:
    """The prediction-relevant content of ``input.nn``."""

    elements: list[str]
    atomic_numbers: list[int]
    cutoff_type: int
    cutoff_alpha: float
    scaling: str  # "none", "scale", "center", "scale_center", "sigma"
    scale_min: float
    scale_max: float
    hidden_nodes: list[int]
    activations: str
    mean_energy: float = 0.0
    conv_energy: float = 1.0
    conv_length: float = 1.0
    atom_energy: dict[int, float] = field(default_factory=dict)
    symmetry_functions: list[list[SymmetryFunction]] = field(default_factory=list)
    units_comment: tuple[str | None, str | None] = (None, None)


@dataclass
class N2P2Potential:
    """A whole potential folder, in the potential's units.

    Shapes (per element ``e`` with ``n_sf[e]`` symmetry functions):
        scaling[e]: ``[n_sf, 4]`` columns Gmin, Gmax, Gmean, Gsigma
        weights[e][l]: ``[n_out, n_in]``; biases[e][l]: ``[n_out]``
    """

    folder: Path
    settings: N2P2Settings
    scaling: list[np.ndarray]
    weights: list[list[np.ndarray]]
    biases: list[list[np.ndarray]]
    units: N2P2Units


def _float(tok: str, where: str, what: str) -> float:
    try:
        return float(tok.replace("D", "E").replace("d", "e"))
    except ValueError:
        raise InputError(f"{where}: {what} must be a number, got {tok!r}") from None


def _int(tok: str, where: str, what: str) -> int:
    try:
        return int(tok)
    except ValueError:
        raise InputError(f"{where}: {what} must be an integer, got {tok!r}") from None


def _element_number(symbol: str, where: str) -> int:
    from ase.data import atomic_numbers

    if symbol not in atomic_numbers or symbol == "X":
        raise InputError(f"{where}: unknown element symbol {symbol!r}")
    return int(atomic_numbers[symbol])


def read_input_nn(path: str | Path) -> N2P2Settings:
    """Parse ``input.nn`` into :class:`N2P2Settings` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"n2p2 settings file {str(path)!r} does not exist")
    raw: dict[str, list[tuple[int, list[str]]]] = {}
    units: list[str | None] = [None, None]
    for n, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        m = re.match(r"^\s*#+\s*(length|energy)\s+unit\s*:\s*(\S+)", text, re.IGNORECASE)
        if m:
            units[0 if m.group(1).lower() == "length" else 1] = m.group(2)
        toks = text.split("#", 1)[0].split()
        if not toks:
            continue
        key = toks[0].lower()
        where = f"{path}, line {n}"
        if key in _IGNORED:
            continue
        if key not in _KNOWN:
            raise InputError(
                f"{where}: keyword {toks[0]!r} is not supported by atomshard's n2p2 reader "
                f"(supported: {', '.join(sorted(_KNOWN))})"
            )
        raw.setdefault(key, []).append((n, toks[1:]))
    return _settings(path, raw, (units[0], units[1]))


_KNOWN = frozenset(
    """number_of_elements elements cutoff_type scale_symmetry_functions
    scale_symmetry_functions_sigma center_symmetry_functions scale_min_short scale_max_short
    global_hidden_layers_short global_nodes_short global_activation_short symfunction_short
    mean_energy conv_energy conv_length atom_energy nnp_type""".split()
)


def _one(path: Path, raw: dict, key: str, n_args: int | None = 1, required: bool = True):
    entries = raw.get(key, [])
    if not entries:
        if required:
            raise InputError(f"{path}: required keyword {key!r} is missing")
        return None, []
    if len(entries) > 1:
        raise InputError(f"{path}, line {entries[1][0]}: keyword {key!r} given twice")
    line, args = entries[0]
    if n_args is not None and len(args) < n_args:
        raise InputError(f"{path}, line {line}: {key!r} needs {n_args} value(s)")
    return line, args


def _settings(path: Path, raw: dict, units: tuple[str | None, str | None]) -> N2P2Settings:
    line, args = _one(path, raw, "nnp_type", required=False)
    if line is not None and args[0] != "1":
        raise InputError(f"{path}, line {line}: nnp_type {args[0]} is not supported (only 1)")
    line, args = _one(path, raw, "elements", None)
    where = f"{path}, line {line}"
    numbers = [_element_number(s, where) for s in args]
    if len(set(numbers)) != len(numbers) or not numbers:
        raise InputError(f"{where}: elements must be distinct and non-empty, got {args}")
    nline, nargs = _one(path, raw, "number_of_elements")
    if _int(nargs[0], f"{path}, line {nline}", "number_of_elements") != len(numbers):
        raise InputError(f"{path}, line {nline}: number_of_elements does not match 'elements'")
    order = sorted(range(len(numbers)), key=lambda i: numbers[i])
    symbols = [args[i] for i in order]
    numbers = [numbers[i] for i in order]
    index = {s: i for i, s in enumerate(symbols)}

    line, args = _one(path, raw, "cutoff_type")
    where = f"{path}, line {line}"
    ctype = _int(args[0], where, "cutoff_type")
    if ctype not in CUTOFF_TYPES:
        raise InputError(f"{where}: cutoff_type {ctype} is not supported (0-8)")
    alpha = _float(args[1], where, "cutoff alpha") if len(args) > 1 else 0.0
    if not 0.0 <= alpha < 1.0:
        raise InputError(f"{where}: cutoff alpha must be in [0, 1), got {alpha}")

    scale = "scale_symmetry_functions" in raw
    center = "center_symmetry_functions" in raw
    sigma = "scale_symmetry_functions_sigma" in raw
    if sigma and scale:
        line = raw["scale_symmetry_functions_sigma"][0][0]
        raise InputError(
            f"{path}, line {line}: scale_symmetry_functions_sigma together with "
            "scale_symmetry_functions is ambiguous"
        )
    scaling = (
        "sigma"
        if sigma
        else {(1, 1): "scale_center", (1, 0): "scale", (0, 1): "center", (0, 0): "none"}[
            (int(scale), int(center))
        ]
    )
    smin = smax = 0.0
    if scaling in ("scale", "scale_center", "sigma"):
        line, args = _one(path, raw, "scale_min_short")
        smin = _float(args[0], f"{path}, line {line}", "scale_min_short")
        line, args = _one(path, raw, "scale_max_short")
        smax = _float(args[0], f"{path}, line {line}", "scale_max_short")

    line, args = _one(path, raw, "global_hidden_layers_short")
    n_hidden = _int(args[0], f"{path}, line {line}", "global_hidden_layers_short")
    line, args = _one(path, raw, "global_nodes_short", n_hidden)
    where = f"{path}, line {line}"
    nodes = [_int(a, where, "global_nodes_short") for a in args[:n_hidden]]
    if len(args) != n_hidden or any(k < 1 for k in nodes):
        raise InputError(f"{where}: need {n_hidden} positive node counts, got {args}")
    line, args = _one(path, raw, "global_activation_short", n_hidden + 1)
    acts = "".join(args)
    if len(args) != n_hidden + 1 or any(len(a) != 1 or a not in ACTIVATIONS for a in args):
        raise InputError(
            f"{path}, line {line}: global_activation_short needs {n_hidden + 1} letters out of "
            f"{''.join(sorted(ACTIVATIONS))}, got {' '.join(args)}"
        )

    settings = N2P2Settings(
        symbols, numbers, ctype, alpha, scaling, smin, smax, nodes, acts, units_comment=units
    )
    for key in ("mean_energy", "conv_energy", "conv_length"):
        line, args = _one(path, raw, key, required=False)
        if line is not None:
            setattr(settings, key, _float(args[0], f"{path}, line {line}", key))
    if not settings.conv_energy > 0 or not settings.conv_length > 0:
        raise InputError(f"{path}: conv_energy and conv_length must be positive")
    for line, args in raw.get("atom_energy", []):
        where = f"{path}, line {line}"
        if len(args) < 2 or args[0] not in index:
            raise InputError(f"{where}: atom_energy needs a potential element and an energy")
        settings.atom_energy[index[args[0]]] = _float(args[1], where, "atom_energy")

    sfs: list[list[SymmetryFunction]] = [[] for _ in symbols]
    for line, args in raw.get("symfunction_short", []):
        sf = parse_symfunction(args, index, f"{path}, line {line}", line)
        sfs[sf.center].append(sf)
    for e, lst in enumerate(sfs):
        if not lst:
            raise InputError(f"{path}: element {symbols[e]} has no symfunction_short lines")
        lst.sort(key=SymmetryFunction.sort_key)
    settings.symmetry_functions = sfs
    return settings


def parse_symfunction(
    args: list[str], index: dict[str, int], where: str, line: int = 0
) -> SymmetryFunction:
    """Parse the arguments of one ``symfunction_short`` line (after the keyword)."""

    def el(tok: str) -> int:
        if tok not in index:
            raise InputError(f"{where}: element {tok!r} is not in the potential's elements")
        return index[tok]

    def nums(toks: list[str], names: str) -> list[float]:
        return [_float(t, where, n) for t, n in zip(toks, names.split(), strict=True)]

    if len(args) < 2:
        raise InputError(f"{where}: symfunction_short needs a central element and a type")
    c = el(args[0])
    t = _int(args[1], where, "symmetry function type")
    if t not in SF_TYPES:
        raise InputError(
            f"{where}: symmetry function type {t} is not supported (supported: {sorted(SF_TYPES)})"
        )
    a = args[2:]
    expect = {2: 4, 3: (6, 7), 9: (6, 7), 12: 3, 13: 5, 20: 4, 21: 7, 22: 7, 23: 3, 24: 5, 25: 5}[t]
    counts = expect if isinstance(expect, tuple) else (expect,)
    if len(a) not in counts:
        raise InputError(
            f"{where}: type {t} needs {' or '.join(map(str, counts))} parameters "
            f"after the type, got {len(a)}"
        )
    sf: SymmetryFunction
    if t == 2:
        eta, rs, rc = nums(a[1:], "eta rs rc")
        sf = SymmetryFunction(c, t, e1=el(a[0]), eta=eta, rs=rs, rc=rc, line=line)
    elif t in (3, 9):
        e1, e2 = sorted((el(a[0]), el(a[1])))
        eta, lam, zeta, rc = nums(a[2:6], "eta lambda zeta rc")
        rs = _float(a[6], where, "rs") if len(a) == 7 else 0.0
        sf = SymmetryFunction(
            c, t, e1=e1, e2=e2, eta=eta, lam=lam, zeta=zeta, rc=rc, rs=rs, line=line
        )
    elif t == 12:
        eta, rs, rc = nums(a, "eta rs rc")
        sf = SymmetryFunction(c, t, eta=eta, rs=rs, rc=rc, line=line)
    elif t == 13:
        eta, rs, lam, zeta, rc = nums(a, "eta rs lambda zeta rc")
        sf = SymmetryFunction(c, t, eta=eta, rs=rs, lam=lam, zeta=zeta, rc=rc, line=line)
    elif t == 20:
        rl, rc = nums(a[1:3], "rl rc")
        sf = SymmetryFunction(c, t, e1=el(a[0]), rl=rl, rc=rc, subtype=_sub(a[3], where), line=line)
    elif t in (21, 22):
        e1, e2 = sorted((el(a[0]), el(a[1])))
        rl, rc, al, ar = nums(a[2:6], "rl rc angle_left angle_right")
        sf = SymmetryFunction(
            c,
            t,
            e1=e1,
            e2=e2,
            rl=rl,
            rc=rc,
            angle_left=al,
            angle_right=ar,
            subtype=_sub(a[6], where),
            line=line,
        )
    elif t == 23:
        rl, rc = nums(a[:2], "rl rc")
        sf = SymmetryFunction(c, t, rl=rl, rc=rc, subtype=_sub(a[2], where), line=line)
    else:
        rl, rc, al, ar = nums(a[:4], "rl rc angle_left angle_right")
        sf = SymmetryFunction(
            c, t, rl=rl, rc=rc, angle_left=al, angle_right=ar, subtype=_sub(a[4], where), line=line
        )
    _check_sf(sf, where)
    return sf


def _sub(tok: str, where: str) -> str:
    if not _SUBTYPE.match(tok):
        raise InputError(
            f"{where}: compact symmetry-function subtype {tok!r} is not supported "
            "(p1..p4, optionally with suffix 'a')"
        )
    return tok


def _check_sf(sf: SymmetryFunction, where: str) -> None:
    if not sf.rc > 0:
        raise InputError(f"{where}: cutoff radius must be positive, got {sf.rc}")
    if sf.compact:
        if not sf.rl < sf.rc:
            raise InputError(f"{where}: need rl < rc, got rl={sf.rl}, rc={sf.rc}")
        if sf.angular and not sf.angle_left < sf.angle_right:
            raise InputError(f"{where}: need angle_left < angle_right (degrees)")
    else:
        if sf.eta < 0:
            raise InputError(f"{where}: eta must be >= 0, got {sf.eta}")
        if sf.angular and (sf.lam not in (-1.0, 1.0) or not sf.zeta >= 1.0):
            raise InputError(
                f"{where}: need lambda = +-1 and zeta >= 1, got lambda={sf.lam}, zeta={sf.zeta}"
            )


def read_scaling(path: str | Path, settings: N2P2Settings) -> list[np.ndarray]:
    """Read ``scaling.data``: per element ``[n_sf, 4]`` (Gmin, Gmax, Gmean, Gsigma)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"n2p2 scaling file {str(path)!r} does not exist")
    n_sf = [len(s) for s in settings.symmetry_functions]
    out = [np.full((n, 4), np.nan) for n in n_sf]
    for n, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        toks = text.split("#", 1)[0].split()
        if not toks:
            continue
        where = f"{path}, line {n}"
        if len(toks) != 6:
            raise InputError(f"{where}: expected 6 columns, got {len(toks)}")
        e, s = _int(toks[0], where, "element index") - 1, _int(toks[1], where, "SF index") - 1
        if not (0 <= e < len(n_sf) and 0 <= s < n_sf[e]):
            raise InputError(f"{where}: element/SF index ({e + 1}, {s + 1}) out of range")
        out[e][s] = [_float(t, where, "scaling value") for t in toks[2:]]
    for e, arr in enumerate(out):
        if np.isnan(arr).any():
            s = int(np.nonzero(np.isnan(arr).any(axis=1))[0][0])
            raise InputError(
                f"{path}: no scaling row for element {settings.elements[e]} "
                f"symmetry function {s + 1}"
            )
    return out


def read_weights(path: str | Path, layers: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read one ``weights.ZZZ.data`` for a network of ``layers`` neurons per layer."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"n2p2 weights file {str(path)!r} does not exist")
    ws = [np.full((layers[i + 1], layers[i]), np.nan) for i in range(len(layers) - 1)]
    bs = [np.full(layers[i + 1], np.nan) for i in range(len(layers) - 1)]
    for n, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        toks = text.split("#", 1)[0].split()
        if not toks:
            continue
        where = f"{path}, line {n}"
        value = _float(toks[0], where, "connection value")
        kind = toks[1] if len(toks) > 1 else "?"
        ints = [_int(t, where, "index") for t in toks[2:]]
        if kind == "a" and len(ints) == 5:
            _, ls, ns, le, ne = ints
            if le != ls + 1 or not (
                0 <= ls < len(ws) and 0 < ns <= layers[ls] and 0 < ne <= layers[le]
            ):
                raise InputError(f"{where}: weight indices {ints[1:]} do not fit layers {layers}")
            ws[ls][ne - 1, ns - 1] = value
        elif kind == "b" and len(ints) == 3:
            _, ls, ns = ints
            if not (1 <= ls <= len(bs) and 0 < ns <= layers[ls]):
                raise InputError(f"{where}: bias indices {ints[1:]} do not fit layers {layers}")
            bs[ls - 1][ns - 1] = value
        else:
            raise InputError(
                f"{where}: expected 'value a index l_s n_s l_e n_e' or 'value b index l_s n_s'"
            )
    if any(np.isnan(w).any() for w in ws) or any(np.isnan(b).any() for b in bs):
        raise InputError(f"{path}: missing connections for a network of layers {layers}")
    return ws, bs


def read_n2p2_potential(
    folder: str | Path,
    *,
    length_unit: str | float | None = None,
    energy_unit: str | float | None = None,
) -> N2P2Potential:
    """Read a whole n2p2 potential folder.

    Args:
        folder: directory with ``input.nn``, ``scaling.data`` and ``weights.ZZZ.data``.
        length_unit, energy_unit: the potential's units (``"bohr"``, ``"angstrom"``,
            ``"hartree"``, ``"ev"`` or a factor in Å / eV); default: from the
            ``# Length unit`` / ``# Energy unit`` comments of ``input.nn``, else Å and eV.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"n2p2 potential folder {str(folder)!r} does not exist")
    settings = read_input_nn(folder / "input.nn")
    scaling = read_scaling(folder / "scaling.data", settings)
    weights, biases = [], []
    for e, z in enumerate(settings.atomic_numbers):
        layers = [len(settings.symmetry_functions[e]), *settings.hidden_nodes, 1]
        w, b = read_weights(folder / f"weights.{z:03d}.data", layers)
        weights.append(w)
        biases.append(b)
    cl, ce = settings.units_comment
    if length_unit is None and energy_unit is None and cl is not None and ce is not None:
        units = N2P2Units.parse(cl, ce, f"comments in {folder / 'input.nn'}")
    elif length_unit is None and energy_unit is None:
        units = N2P2Units()
    else:
        units = N2P2Units.parse(
            length_unit or cl or "angstrom", energy_unit or ce or "ev", "caller"
        )
    return N2P2Potential(folder, settings, scaling, weights, biases, units)
