"""Fused C++ kernel for symmetry functions of types 2, 3, 9, 12, 13 (``_kernel.cpp``).

The kernel is compiled on first use with the system C++ compiler (``$CXX`` or ``g++``,
about two seconds; no torch headers) into a cache folder (``$ATOMSHARD_CACHE`` or
``~/.cache/atomshard``), named by a hash of source and flags, and loaded with ctypes.
It runs over all centre atoms with its own threads and, like the torch path, stores
nothing per neighbour pair: the backward pass recomputes each centre's terms and
contracts them with ``dE/dG`` on the spot.

Where no compiler is available, or ``ATOMSHARD_NATIVE=0`` is set, :func:`load_kernel`
returns ``None`` and :class:`~atomshard.models.bpnn.BPNNPotential` uses its torch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from atomshard.io.n2p2 import N2P2Settings, SymmetryFunction

_SOURCE = Path(__file__).with_name("_kernel.cpp")
_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno", "-pthread"]
_ABI = 1
#: Symmetry-function types the kernel evaluates.
NATIVE_TYPES = frozenset({2, 3, 9, 12, 13})

_P64 = ctypes.POINTER(ctypes.c_int64)
_PD = ctypes.POINTER(ctypes.c_double)


_ARRAYS: list[tuple[str, Any]] = []  # (name, pointer type) of the Plan's array fields


class _PlanStruct(ctypes.Structure):
    # ctypes layout: the same order as struct Plan in _kernel.cpp
    _fields_ = [
        ("n_elem", ctypes.c_int64),
        ("n_feat", ctypes.c_int64),
        ("cutoff_type", ctypes.c_int64),
        ("alpha", ctypes.c_double),
        ("max_comb", ctypes.c_int64),
        ("rad_ptr", _P64),
        ("rad_eta", _PD),
        ("rad_rs", _PD),
        ("rad_rc", _PD),
        ("rad_w", _PD),
        ("rad_col", _P64),
        ("rad_ref", _P64),
        ("rad_pw", _P64),
        ("tab_ptr", _P64),
        ("tab_eta", _PD),
        ("tab_rs", _PD),
        ("tab_rc", _PD),
        ("tab_ref", _P64),
        ("tab_pw", _P64),
        ("ang_rc", _PD),
        ("rcomb_ptr", _P64),
        ("rcomb_tab", _P64),
        ("rcomb_rjk", _P64),
        ("list_eta", _PD),
        ("list_rs", _PD),
        ("acomb_ptr", _P64),
        ("acomb_lam", _PD),
        ("acomb_zeta", _PD),
        ("acomb_pre", _PD),
        ("fn_ptr", _P64),
        ("fn_r", _P64),
        ("fn_a", _P64),
        ("fn_col", _P64),
        ("fn_w", _PD),
        ("list_rjk_max", _PD),
    ]


_ARRAYS.extend((f[0], f[1]) for f in _PlanStruct._fields_[5:])
_state: dict[str, Any] = {}


def kernel_unavailable_reason() -> str | None:
    """Why :func:`load_kernel` returns ``None`` (``None`` when the kernel loads)."""
    load_kernel()
    return _state.get("reason")


def load_kernel() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; ``None`` if unavailable."""
    if "lib" in _state:
        return _state["lib"]
    lib = None
    if os.environ.get("ATOMSHARD_NATIVE", "1") == "0":
        _state["reason"] = "disabled by ATOMSHARD_NATIVE=0"
    else:
        try:
            lib = _build_and_load()
        except (OSError, subprocess.SubprocessError) as exc:
            _state["reason"] = f"could not build {_SOURCE.name}: {exc}"
    _state["lib"] = lib
    return lib


def _build_and_load() -> ctypes.CDLL:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise OSError(f"no C++ compiler {cxx!r} on PATH")
    source = _SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join([cxx, *_FLAGS]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("ATOMSHARD_CACHE") or Path.home() / ".cache" / "atomshard")
    target = cache / f"bpnn_kernel_{digest}.so"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
        os.close(fd)
        try:
            result = subprocess.run(
                [cxx, *_FLAGS, str(_SOURCE), "-o", tmp],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if result.returncode != 0:
                raise OSError(result.stderr.strip()[-2000:])
            os.replace(tmp, target)  # atomic: concurrent builders race harmlessly
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    if lib.bp_abi_version() != _ABI:
        raise OSError(f"{target} has ABI {lib.bp_abi_version()}, expected {_ABI}")
    common: list[Any] = [ctypes.POINTER(_PlanStruct), ctypes.c_int64, _P64, ctypes.c_void_p]
    common += [_P64, _P64, ctypes.c_int]
    lib.bp_forward.argtypes = [*common, ctypes.c_void_p, ctypes.c_int]
    lib.bp_backward.argtypes = [*common, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.bp_cells.argtypes = [ctypes.POINTER(_PlanStruct), ctypes.c_int64, _PD, _P64, _PD, _P64]
    lib.bp_cells.argtypes += [_P64, _P64, _P64, ctypes.c_double, ctypes.c_int, ctypes.c_void_p]
    lib.bp_cells.argtypes += [ctypes.c_void_p, _PD, _PD, ctypes.c_int]
    lib.bp_forward.restype = lib.bp_backward.restype = lib.bp_cells.restype = ctypes.c_int
    return lib


class NativePlan:
    """The symmetry functions of a potential flattened into the kernel's arrays.

    Args:
        settings: the potential's settings; read are its symmetry functions per element
            (columns in n2p2 order), Z per element (weights of types 12 and 13) and the
            cutoff function (``cutoff_type``, ``cutoff_alpha``).
    """

    def __init__(self, settings: N2P2Settings) -> None:
        self._settings = settings
        functions, atomic_numbers = settings.symmetry_functions, settings.atomic_numbers
        cutoff_type, cutoff_alpha = settings.cutoff_type, settings.cutoff_alpha
        n = len(functions)
        self.n_elements = n
        self.n_features_max = max(len(f) for f in functions)
        z = [float(v) for v in atomic_numbers]
        radial: list[list[tuple]] = [[] for _ in range(n * n)]
        lists: list[list[tuple]] = [[] for _ in range(n * n * n)]
        for c, fs in enumerate(functions):
            for col, sf in enumerate(fs):
                if sf.type not in NATIVE_TYPES:
                    raise ValueError(f"symmetry function type {sf.type} is not in the kernel")
                if not sf.angular:
                    for a in range(n) if sf.weighted else [sf.e1]:
                        w = z[a] if sf.weighted else 1.0
                        radial[c * n + a].append((sf.rc, sf.eta, sf.rs, w, col))
                    continue
                pairs = (
                    [(a, b) for a in range(n) for b in range(a, n)]
                    if sf.weighted
                    else [(min(sf.e1, sf.e2), max(sf.e1, sf.e2))]
                )
                for a, b in pairs:
                    w = z[a] * z[b] if sf.weighted else 1.0
                    lists[(c * n + a) * n + b].append((sf, col, w))
        for fl in radial:
            # by rc (one cutoff evaluation per rc), then rs and eta: exp powers of earlier ones
            fl.sort(key=lambda t: (t[0], t[2], t[1]))
        arrays: dict[str, list] = {k: [] for k, _ in _ARRAYS}
        arrays["rad_ptr"].append(0)
        for fl in radial:
            base = len(arrays["rad_rc"])
            for ref, pw in _power_refs([(eta, rs, rc) for rc, eta, rs, _, _ in fl]):
                arrays["rad_ref"].append(ref + base if ref >= 0 else -1)
                arrays["rad_pw"].append(pw)
            for rc, eta, rs, w, col in fl:
                arrays["rad_rc"].append(rc)
                arrays["rad_eta"].append(eta)
                arrays["rad_rs"].append(rs)
                arrays["rad_w"].append(w)
                arrays["rad_col"].append(col)
            arrays["rad_ptr"].append(len(arrays["rad_rc"]))
        # per-edge tables: distinct (eta, rs, rc) of each centre element's angular functions
        tables: list[list[tuple[float, float, float]]] = [[] for _ in range(n)]
        arrays["tab_ptr"].append(0)
        for c in range(n):
            for li in range(c * n * n, (c + 1) * n * n):
                for sf, _, _ in lists[li]:
                    key = (sf.eta, sf.rs, sf.rc)
                    if key not in tables[c]:
                        tables[c].append(key)
            tables[c].sort(key=lambda k: (k[2], k[1], k[0]))
            for ref, pw in _power_refs(tables[c]):
                arrays["tab_ref"].append(ref)
                arrays["tab_pw"].append(pw)
            for eta, rs, rc in tables[c]:
                arrays["tab_eta"].append(eta)
                arrays["tab_rs"].append(rs)
                arrays["tab_rc"].append(rc)
            arrays["tab_ptr"].append(len(arrays["tab_eta"]))
            arrays["ang_rc"].append(max((k[2] for k in tables[c]), default=0.0))
        for k in ("rcomb_ptr", "acomb_ptr", "fn_ptr"):
            arrays[k].append(0)
        max_comb = 1
        for li, items in enumerate(lists):
            c = li // (n * n)
            rcombs: list[tuple[int, int]] = []
            acombs: list[tuple[float, float]] = []
            for sf, col, w in items:
                t = arrays["tab_ptr"][c] + tables[c].index((sf.eta, sf.rs, sf.rc))
                rkey = (t, int(sf.type in (3, 13)))
                akey = (sf.lam, sf.zeta)
                if rkey not in rcombs:
                    rcombs.append(rkey)
                if akey not in acombs:
                    acombs.append(akey)
                arrays["fn_r"].append(rcombs.index(rkey))
                arrays["fn_a"].append(acombs.index(akey))
                arrays["fn_col"].append(col)
                arrays["fn_w"].append(w)
            base_eta, base_rs, powers = _rjk_powers(
                [(arrays["tab_eta"][t], arrays["tab_rs"][t]) for t, rjk in rcombs if rjk]
            )
            arrays["list_eta"].append(base_eta)
            arrays["list_rs"].append(base_rs)
            for t, rjk in rcombs:
                arrays["rcomb_tab"].append(t)
                arrays["rcomb_rjk"].append(powers.pop(0) if rjk else 0)
            for lam, zeta in acombs:
                arrays["acomb_lam"].append(lam)
                arrays["acomb_zeta"].append(zeta)
                arrays["acomb_pre"].append(2.0 ** (1.0 - zeta))
            max_comb = max(max_comb, len(rcombs), len(acombs))
            all_rjk = bool(items) and all(sf.type in (3, 13) for sf, _, _ in items)
            arrays["list_rjk_max"].append(max(sf.rc for sf, _, _ in items) if all_rjk else -1.0)
            arrays["rcomb_ptr"].append(len(arrays["rcomb_tab"]))
            arrays["acomb_ptr"].append(len(arrays["acomb_lam"]))
            arrays["fn_ptr"].append(len(arrays["fn_col"]))
        # keep the tensors alive as long as the struct points into them
        self._tensors: dict[str, torch.Tensor] = {}
        values: dict[str, Any] = {}
        for name, ctype in _ARRAYS:
            dtype = torch.int64 if ctype is _P64 else torch.float64
            data = arrays[name] or [0]  # never a null pointer
            t = torch.tensor(data, dtype=dtype)
            self._tensors[name] = t
            values[name] = ctypes.cast(t.data_ptr(), ctype)
        self.struct = _PlanStruct(
            n_elem=n,
            n_feat=self.n_features_max,
            cutoff_type=int(cutoff_type),
            alpha=float(cutoff_alpha),
            max_comb=max_comb,
            **values,
        )

    def __reduce__(self) -> tuple[Any, tuple]:
        """Pickle (and deepcopy) by rebuilding: the struct holds raw pointers."""
        return (NativePlan, (self._settings,))


def _power_refs(params: list[tuple[float, float, float]]) -> list[tuple[int, int]]:
    """For each ``(eta, rs, rc)`` in order: ``(ref, n)`` with ``exp(-eta (r - rs)^2) =
    exp(-eta_ref (r - rs)^2)^n`` for an earlier entry ``ref`` of the same ``rs`` and
    ``rc`` (smallest ``n`` <= 64), or ``(-1, 0)``: an exp of its own. The radial etas of
    n2p2 potentials are often integer multiples (0.001, 0.01, 0.03, 0.06 ...)."""
    out: list[tuple[int, int]] = []
    for i, (eta, rs, rc) in enumerate(params):
        best = (-1, 0)
        for j in range(i):
            eta_j, rs_j, rc_j = params[j]
            if rs_j != rs or rc_j != rc or eta_j <= 0:
                continue
            n = round(eta / eta_j)
            if 2 <= n <= 64 and abs(eta / eta_j - n) <= 1e-12 * n and (best[0] < 0 or n < best[1]):
                best = (j, n)
        out.append(best)
    return out


def _rjk_powers(params: list[tuple[float, float]]) -> tuple[float, float, list[int]]:
    """Base ``(eta_b, rs_b)`` and, per ``(eta, rs)``, the power ``n`` with
    ``exp(-eta (r - rs)^2) = exp(-eta_b (r - rs_b)^2)^n`` (-1: its own exp).

    Used when all ``rs`` agree and every eta is an integer multiple (<= 64) of the
    smallest; the power costs a few multiplications and ~n ulp instead of an exp.
    """
    if not params:
        return 0.0, 0.0, []
    eta_b = min(eta for eta, _ in params)
    rs_b = params[0][1]
    powers = []
    for eta, rs in params:
        n = round(eta / eta_b) if eta_b > 0 else 0
        exact = eta_b > 0 and rs == rs_b and 1 <= n <= 64 and abs(eta / eta_b - n) <= 1e-12 * n
        powers.append(n if exact else -1)
    if all(n == -1 for n in powers):
        return 0.0, 0.0, powers
    return eta_b, rs_b, powers


def supports(functions: list[list[SymmetryFunction]]) -> bool:
    """Whether every function of the potential is one the kernel evaluates."""
    return all(sf.type in NATIVE_TYPES for fs in functions for sf in fs)


def _ptr(t: torch.Tensor) -> Any:
    return ctypes.cast(t.data_ptr(), _P64)


def _dtype_code(t: torch.Tensor) -> int:
    if t.dtype == torch.float64:
        return 0
    if t.dtype == torch.float32:
        return 1
    raise ValueError(f"kernel supports float64 and float32, got {t.dtype}")


def native_forward(
    plan: NativePlan,
    vec: torch.Tensor,
    edge_start: torch.Tensor,
    centre_elem: torch.Tensor,
    nbr_elem: torch.Tensor,
    n_threads: int,
) -> torch.Tensor:
    """Unscaled symmetry functions ``[n_centres, n_features_max]`` in ``vec.dtype``.

    Shapes:
        vec: ``[n_edges, 3]`` contiguous, edges grouped by centre
        edge_start: ``[n_centres + 1]`` int64 CSR offsets
        centre_elem: ``[n_centres]`` int64; nbr_elem: ``[n_edges]`` int64
    """
    lib = load_kernel()
    assert lib is not None
    n = centre_elem.numel()
    out = torch.empty(n, plan.n_features_max, dtype=vec.dtype)
    lib.bp_forward(
        ctypes.byref(plan.struct),
        n,
        _ptr(edge_start),
        vec.data_ptr(),
        _ptr(centre_elem),
        _ptr(nbr_elem),
        _dtype_code(vec),
        out.data_ptr(),
        n_threads,
    )
    return out


def native_backward(
    plan: NativePlan,
    vec: torch.Tensor,
    edge_start: torch.Tensor,
    centre_elem: torch.Tensor,
    nbr_elem: torch.Tensor,
    grad: torch.Tensor,
    n_threads: int,
) -> torch.Tensor:
    """``dE/dvec [n_edges, 3]`` from ``dE/dG [n_centres, n_features_max]`` (same inputs as
    :func:`native_forward`)."""
    lib = load_kernel()
    assert lib is not None
    grad = grad.to(vec.dtype).contiguous()
    out = torch.empty_like(vec)
    lib.bp_backward(
        ctypes.byref(plan.struct),
        centre_elem.numel(),
        _ptr(edge_start),
        vec.data_ptr(),
        _ptr(centre_elem),
        _ptr(nbr_elem),
        _dtype_code(vec),
        grad.data_ptr(),
        out.data_ptr(),
        n_threads,
    )
    return out


def _dptr(t: torch.Tensor) -> Any:
    assert t.dtype == torch.float64 and t.is_contiguous()
    return ctypes.cast(t.data_ptr(), _PD)


def native_cells(
    plan: NativePlan,
    cells: dict[str, Any],
    *,
    features: torch.Tensor | None = None,
    grad: torch.Tensor | None = None,
    n_threads: int = 1,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The positions path: neighbours from a cell list, no edge list.

    With ``features`` (``[n, n_features_max]``, float32/64, written): the symmetry
    functions. With ``grad`` (``dE/dG``, same shape): returns ``(forces [n, 3],
    virial [3, 3])`` in potential units, forces ``= -dE/dpos``, virial ``= -sum v (x) g``.

    ``cells``: ``pos`` (wrapped, ``[n, 3]`` float64), ``elem``, ``cell`` (rows), ``nb``
    (bins per axis), ``bin_of``, ``bin_start``, ``order`` (int64), ``cutoff`` (float).
    """
    lib = load_kernel()
    assert lib is not None
    target = features if features is not None else grad
    assert target is not None and target.is_contiguous()
    n = int(cells["elem"].numel())
    forces = torch.zeros(n, 3, dtype=torch.float64) if grad is not None else None
    virial = torch.zeros(3, 3, dtype=torch.float64)
    lib.bp_cells(
        ctypes.byref(plan.struct),
        n,
        _dptr(cells["pos"]),
        _ptr(cells["elem"]),
        _dptr(cells["cell"]),
        _ptr(cells["nb"]),
        _ptr(cells["bin_of"]),
        _ptr(cells["bin_start"]),
        _ptr(cells["order"]),
        float(cells["cutoff"]),
        _dtype_code(target),
        features.data_ptr() if features is not None else None,
        grad.data_ptr() if grad is not None else None,
        _dptr(forces) if forces is not None else None,
        _dptr(virial),
        n_threads,
    )
    return None if forces is None else (forces, virial)
