"""No module imports a private name of another package.

A package's private modules (``_exchange.py``) and private names (``_scan_extxyz``) are
free to change; other packages, and the scripts in ``benchmarks/`` (a package of their
own here), import only what a package exports under a public name. Flagged, in every
file of ``src/atomshard`` and ``benchmarks``:

- ``import atomshard.<pkg>._mod`` and ``from atomshard.<pkg>._mod import ...``;
- ``from atomshard.<pkg>... import _name``;

where ``<pkg>`` is another top-level package than the importing file's own. Dunder names
(``__version__``) are public.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "atomshard"
BENCHMARKS = ROOT / "benchmarks"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_package(path: Path, src: Path) -> str:
    """``atomshard`` sub-package (or top-level module) a file belongs to; ``benchmarks``
    for the scripts (files outside ``src``)."""
    if not path.is_relative_to(src):
        return "benchmarks"
    first = path.relative_to(src).parts[0]
    return "__init__" if first == "__init__.py" else first.removesuffix(".py")


def _absolute(path: Path, node: ast.ImportFrom, src: Path) -> str | None:
    """The module a ``from ... import`` reads, relative imports resolved (None: a
    relative import outside ``src``)."""
    if node.level == 0:
        return node.module
    if not path.is_relative_to(src):
        return None
    package = list(path.relative_to(src.parent).parts[:-1])  # atomshard, comm, ...
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(path: Path, src: Path = SRC) -> list[str]:
    """``"line: what"`` for each import of another package's private module or name in
    ``path`` (a file of the package at ``src``, or a script outside it)."""
    own = _own_package(path, src)
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, node, src)
            targets = [] if module is None else [(module, [a.name for a in node.names])]
        else:
            continue
        for module, names in targets:
            parts = module.split(".")
            if parts[0] != "atomshard":
                continue
            if len(parts) == 1:  # from atomshard import <package or name>
                bad = [n for n in names if _is_private(n) and n.removesuffix(".py") != own]
            elif parts[1] == own:
                continue
            else:
                bad = [p for p in parts[1:] if _is_private(p)]
                bad += [n for n in names if _is_private(n)]
            if bad:
                what = f"from {module} import {', '.join(names)}" if names else f"import {module}"
                found.append(f"{node.lineno}: {what} (private: {', '.join(bad)})")
    return found


FILES = sorted(SRC.rglob("*.py")) + sorted(BENCHMARKS.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_imports_across_packages(path):
    found = private_imports(path)
    assert not found, (
        f"{path.relative_to(ROOT)} imports private names of another package "
        f"(export a public name there instead):\n  " + "\n  ".join(found)
    )


def test_the_check_sees_private_imports(tmp_path):
    """The walker flags each form, resolves relative imports, and lets a package's own
    private modules, public names and dunders through."""
    src = tmp_path / "src" / "atomshard"
    (src / "md").mkdir(parents=True)
    (tmp_path / "benchmarks").mkdir()
    driver = src / "md" / "driver.py"
    driver.write_text(
        "from atomshard.md._state import State\n"  # own package: fine
        "from ._noise import noise\n"  # own package, relative: fine
        "from atomshard.runtime import DistributedEvaluator\n"  # public: fine
        "from atomshard import __version__, units\n"  # fine
        "from atomshard.runtime._md import run\n"
        "import atomshard.comm._group as group\n"
        "from atomshard.train.data import _from_atoms\n"
        "from ..runtime._api import load\n"
        "def f():\n"
        "    from atomshard.graph._neighbors import raw_pairs\n"  # inside a function too
    )
    script = tmp_path / "benchmarks" / "bench_x.py"
    script.write_text(
        "from _timing import time_steps\n"  # a script's own helper: fine
        "from atomshard.commands._common import parse_repeat\n"
    )
    assert [f.split(":")[0] for f in private_imports(driver, src)] == ["5", "6", "7", "8", "10"]
    assert [f.split(":")[0] for f in private_imports(script, src)] == ["2"]
