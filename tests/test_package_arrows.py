"""The import arrows of docs/architecture.md, checked on the source: they only run one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the Roost packages it may import (besides itself)
ALLOWED = {
    "roost.contract": set(),
    "roost.client": set(),
    "service": {"roost.contract"},
    "training": {"roost.contract"},
    "roost.cli": {"roost.client", "service", "training"},
}
PACKAGES = ("roost.contract", "roost.client", "roost.cli", "service", "training")


def package_of(module: str) -> str | None:
    for package in PACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return None


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def source_files(package: str) -> list[Path]:
    path = ROOT / package.replace(".", "/")
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_arrows(package: str) -> None:
    wrong = []
    for file in source_files(package):
        for module in imported_modules(file):
            target = package_of(module)
            if target not in (None, package) and target not in ALLOWED[package]:
                wrong.append(f"{file.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_cli() -> None:
    importers = [
        file.relative_to(ROOT)
        for package in PACKAGES
        if package != "roost.cli"
        for file in source_files(package)
        if any(package_of(m) == "roost.cli" for m in imported_modules(file))
    ]
    assert importers == []
