"""Lower layers never import higher ones (DESIGN.md: graph <- partition <- comm <- nn/models
<- runtime <- md/train <- cli), and only ``atomshard.comm`` imports ``torch.distributed``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "atomshard"

#: Package -> layer. A module may import its own package or packages of a lower layer.
LAYERS = {
    "errors": 0,
    "units": 0,
    "glossary": 0,
    "utils": 0,
    "graph": 1,
    "io": 2,
    "partition": 2,
    "comm": 3,
    "nn": 4,
    "hamiltonian": 5,
    "models": 6,
    "testing": 7,
    "runtime": 7,
    "md": 8,
    "train": 8,
    "lammps": 8,
    "bench": 9,
    "commands": 10,
    "cli": 10,
    "__main__": 10,
}


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC).parts
    return rel[0].removesuffix(".py") if rel[0] != "__init__.py" else "__init__"


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


MODULES = sorted(p for p in SRC.rglob("*.py") if _package_of(p) != "__init__")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_respect_layers(path):
    package = _package_of(path)
    assert package in LAYERS, f"new top-level package {package!r}: give it a layer here"
    for line, name in _imports(path):
        if name.startswith("torch.distributed") and package != "comm":
            pytest.fail(f"{path.relative_to(SRC)}:{line} imports {name}; only comm/ may")
        if not name.startswith("atomshard."):
            continue
        target = name.split(".")[1]
        if target == package or target not in LAYERS:
            continue
        assert LAYERS[target] <= LAYERS[package], (
            f"{path.relative_to(SRC)}:{line} imports atomshard.{target} (layer "
            f"{LAYERS[target]}) from {package} (layer {LAYERS[package]})"
        )


#: Packages models/ may not import although they sit in lower layers: a model gets its
#: communication as the exchange it is handed (``models.base.Exchange``), and splitting a
#: structure into parts or blocks is the engine's business (``runtime``).
MODELS_NEVER_IMPORT = ("atomshard.comm", "atomshard.partition")


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if _package_of(p) == "models"],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_models_import_neither_comm_nor_partition(path):
    for line, name in _imports(path):
        for banned in MODELS_NEVER_IMPORT:
            assert name != banned and not name.startswith(banned + "."), (
                f"{path.relative_to(SRC)}:{line} imports {name}; models call the exchange "
                "they are handed and leave partitioning to the engine"
            )
