"""The code's shape rules: no module over 400 lines, no function over 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("trialsim", "analysis")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def shape_violations(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """One line per module over MAX_MODULE_LINES and per function (methods and nested
    functions included) over MAX_FUNCTION_LINES, in the ``.py`` files under ``packages``
    of ``root``; paths relative to ``root``."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            src = path.read_text(encoding="utf-8")
            rel = path.relative_to(root).as_posix()
            n = len(src.splitlines())
            if n > MAX_MODULE_LINES:
                found.append(f"{rel}: module has {n} lines (max {MAX_MODULE_LINES})")
            for node in ast.walk(ast.parse(src, filename=rel)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append(f"{rel}:{node.lineno}: {node.name} has {length} lines (max {MAX_FUNCTION_LINES})")
    return found


def test_modules_and_functions_within_limits():
    found = shape_violations(ROOT)
    assert not found, "code over the shape limits:\n" + "\n".join(found)


def test_shape_check_names_long_module_and_function(tmp_path):
    pkg = tmp_path / "trialsim"
    pkg.mkdir()
    long_fn = "def too_long():\n" + "    x = 1\n" * MAX_FUNCTION_LINES + "    return x\n"
    ok_fn = "def fine():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 2) + "    return x\n"
    (pkg / "a.py").write_text(long_fn)
    (pkg / "b.py").write_text(ok_fn + "\n" * (MAX_MODULE_LINES - ok_fn.count("\n")))
    (pkg / "c.py").write_text("class K:\n    " + long_fn.replace("\n    ", "\n        ").replace("def ", "def m_", 1))
    (pkg / "d.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    found = shape_violations(tmp_path, ("trialsim",))
    assert found == [
        f"trialsim/a.py:1: too_long has {MAX_FUNCTION_LINES + 2} lines (max {MAX_FUNCTION_LINES})",
        f"trialsim/c.py:2: m_too_long has {MAX_FUNCTION_LINES + 2} lines (max {MAX_FUNCTION_LINES})",
        f"trialsim/d.py: module has {MAX_MODULE_LINES + 1} lines (max {MAX_MODULE_LINES})",
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_exist(package):
    # a renamed or moved package would make the shape check pass vacuously
    assert any((ROOT / package).rglob("*.py"))
