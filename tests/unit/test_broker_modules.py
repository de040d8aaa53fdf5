"""The broker package's modules talk through public names, and none imports another that
imports it back (issue 7: one owner per concept)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "shared" / "broker"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): ast.parse(path.read_text()) for path in PACKAGE.rglob("*.py")}


def imports_of(tree: ast.Module) -> list[ast.ImportFrom]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_broker_module_imports_no_private_name(name: str) -> None:
    private = [
        f"{node.module}.{alias.name}"
        for node in imports_of(MODULES[name])
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert private == []


def test_broker_modules_import_no_circle() -> None:
    # Given the import graph among the package's own modules (the port, __init__, is the root
    # every adapter imports, so a module importing it is no circle)
    graph = {
        name: {
            node.module
            for node in imports_of(tree)
            if node.module in MODULES and node.module != "shared.broker"
        }
        for name, tree in MODULES.items()
    }

    # When each module's imports are followed
    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            seen.add(nxt)
            if nxt == target or reaches(nxt, target, seen):
                return True
        return False

    # Then none leads back to the module itself
    assert [name for name in graph if reaches(name, name, set())] == []
