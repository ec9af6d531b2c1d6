"""The test tree's own rules: no test module imports another test module (shared fixtures live
in ``conftest.py``, shared builders in helper modules; docs/decisions/0040)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def test_no_test_module_imports_another_test_module() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for name in _imported_modules(path):
            parts = name.split(".")
            local = parts[1:] if parts[0] == "tests" else parts if len(parts) == 1 else []
            if any(part.startswith("test_") for part in local):
                offenders.append(f"{path.relative_to(TESTS)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_helper_modules_define_no_fixtures() -> None:
    """Fixtures shared between modules belong in conftest.py, not in helper modules."""
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name.startswith("test_") or path.name == "conftest.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for dec in node.decorator_list:
                    target = dec.func if isinstance(dec, ast.Call) else dec
                    if ast.unparse(target) in ("pytest.fixture", "fixture"):
                        offenders.append(f"{path.relative_to(TESTS)}::{node.name}")
    assert not offenders, offenders


def test_test_file_names_are_unique() -> None:
    """There are no ``__init__.py`` files in tests: basenames must not repeat across folders."""
    seen: dict[str, Path] = {}
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == "conftest.py":
            continue
        assert path.name not in seen, f"{path} and {seen[path.name]}"
        seen[path.name] = path
