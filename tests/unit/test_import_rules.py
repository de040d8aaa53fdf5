"""The house rules the code's imports keep (issue 7: one owner per concept):

- no module imports another module's private (single-underscore) name, or reaches into one
  through a module it imported: a module that needs one is asking for a public interface, or
  for the two to merge;
- no module imports one that imports it back, directly or around a longer circle.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "gateway", "dispatcher", "result_writer", "droneflow")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {
    _module_name(path): path
    for package in PACKAGES
    for path in sorted((ROOT / package).rglob("*.py"))
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_names_taken(source: str) -> list[str]:
    tree = ast.parse(source)
    imported: set[str] = set()
    taken: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _private(alias.name):
                    taken.append(f"{node.module}.{alias.name}")
                imported.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            imported.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    taken.extend(
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in imported
        and _private(node.attr)
    )
    return taken


def _imported_modules(name: str, path: Path) -> set[str]:
    """Our modules `name` imports. A module's own package (`__init__`) is left out: Python runs
    it before the module anyway, so an edge to it is no circle of ours."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = name.split(".")[: -node.level] if path.name != "__init__.py" else None
                base = ".".join([*(package or name.split(".")), node.module])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return (found & set(SOURCES)) - own_packages - {name}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_module_takes_no_private_name_of_another(name: str) -> None:
    assert private_names_taken(SOURCES[name].read_text()) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = {name: _imported_modules(name, path) for name, path in SOURCES.items()}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for following in graph[start] - seen:
            seen.add(following)
            if following == target or reaches(following, target, seen):
                return True
        return False

    assert sorted(name for name in graph if reaches(name, name, set())) == []


def test_private_name_check_finds_an_import_and_a_reach() -> None:
    assert private_names_taken("from a.b import _c, d\nimport e\ne._f\n") == ["a.b._c", "e._f"]
