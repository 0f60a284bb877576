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


# Inside service/: a layer imports only itself and the layers below it; the leaves import only
# leaves; nothing imports the composition root (app.py, server.py, __main__.py).
SERVICE_LAYERS = (
    "service.protocols",
    "service.serving",
    "service.repository",
    "service.policy",
    "service.runtime",
)
SERVICE_LEAVES = (
    "service.observability",
    "service.errors",
    "service.request_context",
    "service.settings",
    "service.model_config",
    "service.cpus",
    "service.malloc",
)


def service_part(module: str) -> str:
    for part in (*SERVICE_LAYERS, *SERVICE_LEAVES):
        if module == part or module.startswith(part + "."):
            return part
    return "service"  # the package itself and its composition root


def test_service_layers_import_only_downwards() -> None:
    wrong = []
    for file in source_files("service"):
        source = service_part(module_name(file))
        for module in imported_modules(file):
            if package_of(module) != "service":
                continue
            target = service_part(module)
            if target == source:
                continue
            if target == "service":
                allowed = False  # the composition root is imported by no one
            elif target in SERVICE_LEAVES:
                allowed = True
            elif source in SERVICE_LEAVES:
                allowed = False
            elif source == "service":
                allowed = True
            else:
                allowed = SERVICE_LAYERS.index(target) > SERVICE_LAYERS.index(source)
            if not allowed:
                wrong.append(f"{file.relative_to(ROOT)} ({source}) imports {module} ({target})")
    assert not wrong, "\n".join(wrong)


def module_name(file: Path) -> str:
    parts = file.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, at any depth of its code (an import inside a
    function still makes a circle)."""
    files = [f for p in (*PACKAGES, "bench") for f in source_files(p)]
    modules = {module_name(f) for f in files}
    graph: dict[str, set[str]] = {}
    for file in files:
        edges = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    if submodule in modules:
                        edges.add(submodule)
                    elif node.module in modules:
                        edges.add(node.module)
        graph[module_name(file)] = edges - {module_name(file)}
    return graph


def test_no_module_imports_in_a_circle() -> None:
    graph = import_graph()
    circles: list[list[str]] = []
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)
