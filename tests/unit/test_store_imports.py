"""The store's modules share public names only: a module that needs another's private name is
asking for a public interface, or for the two to merge (shared/STYLE.md)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    [
        *(ROOT / "shared" / "store").rglob("*.py"),
        ROOT / "shared" / "lifecycle.py",
        ROOT / "shared" / "models.py",
        ROOT / "shared" / "errors.py",
    ]
)


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
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in imported
            and _private(node.attr)
        ):
            taken.append(f"{node.value.id}.{node.attr}")
    return taken


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_store_modules_import_no_private_name_of_another(path: Path) -> None:
    assert private_names_taken(path.read_text()) == []


def test_store_imports_check_finds_a_private_name() -> None:
    assert private_names_taken("from a.b import _c, d\nimport e\ne._f\n") == ["a.b._c", "e._f"]
