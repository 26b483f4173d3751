"""The tests' own house rules, read from their source with `ast` (milliseconds): a test file imports what it
shares from tests/helpers/, never from another test file nor from conftest (which holds fixtures, found by
pytest, not imported), and the helpers import no test file either."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TEST_FILES = sorted(TESTS.glob("test_*.py"))
HELPERS = sorted((TESTS / "helpers").glob("*.py"))
# Modules of tests/ a test file must not import: every other test file, and conftest.
FORBIDDEN = {p.stem for p in TEST_FILES} | {"conftest"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`, at any depth (an import inside a test function counts)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def forbidden_imports(path: Path) -> list[str]:
    return [f"{path.name}:{line}: imports {module}" for line, module in imported_modules(path)
            if module.split(".")[0] in FORBIDDEN]


@pytest.mark.parametrize("path", TEST_FILES + HELPERS, ids=lambda p: p.relative_to(TESTS).as_posix())
def test_a_test_file_imports_no_other_test_file_nor_conftest(path):
    assert forbidden_imports(path) == []


def test_the_check_sees_an_import_of_a_test_file_at_any_depth(tmp_path):
    """The rule can fail: a top-level import, one inside a function, and one of conftest are all found."""
    bad = tmp_path / "test_bad.py"
    bad.write_text("import os\nfrom test_sweep import write_study\n\n\ndef test_x():\n"
                   "    import test_engine\n    from conftest import cli\n    from helpers import cli\n")
    assert forbidden_imports(bad) == ["test_bad.py:2: imports test_sweep", "test_bad.py:6: imports test_engine",
                                      "test_bad.py:7: imports conftest"]
