"""The layers of docs/architecture.md, enforced: each package imports only the packages
below it, and code outside a package uses its face (``advex.certify``, not
``advex.certify.bounds``)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "advex"

# what each package may import (besides itself); the graph of docs/architecture.md
ALLOWED = {
    "errors": set(),
    "data": {"errors"},
    "models": {"data", "errors"},
    "report": {"data", "errors"},
    "attacks": {"models", "data", "errors"},
    "certify": {"attacks", "models", "data", "errors"},
    "evaluation": {"certify", "attacks", "report", "models", "data", "errors"},
    "defences": {"evaluation", "certify", "attacks", "report", "models", "data", "errors"},
    "cli": {"defences", "evaluation", "certify", "attacks", "report", "models", "data", "errors"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``advex...`` import in a file, at any depth (lazy ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
    return [(n, m) for n, m in found if m == "advex" or m.startswith("advex.")]


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else "advex"


FILES = sorted(p for p in SRC.rglob("*.py") if _package(p) in ALLOWED)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_each_package_imports_only_the_layers_below_it(path):
    pkg = _package(path)
    for line, module in _imports(path):
        parts = module.split(".")
        if len(parts) < 2 or parts[1] == pkg:
            continue  # `from advex import __version__`, or its own modules
        other = parts[1]
        assert other in ALLOWED[pkg], f"{path.relative_to(SRC)}:{line} imports {module}: {pkg} may not use {other}"
        # across packages, through the face: advex.certify, not advex.certify.bounds
        assert len(parts) == 2, f"{path.relative_to(SRC)}:{line} imports {module}: use the face advex.{other}"


def test_every_package_is_in_the_layer_table():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert packages | modules == set(ALLOWED)
