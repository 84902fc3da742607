"""``analysis`` never imports ``trialsim``: no import statement in any of its files, nothing at run time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_file_under_analysis_imports_trialsim():
    files = sorted((ROOT / "analysis").rglob("*.py"))
    assert len(files) >= 5
    offenders = {
        str(f.relative_to(ROOT)): m
        for f in files
        for m in _imported_modules(f)
        if m == "trialsim" or m.startswith("trialsim.")
    }
    assert offenders == {}


def test_the_scan_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from trialsim.protocol import Protocol\n    import trialsim\n")
    assert _imported_modules(f) == ["trialsim.protocol", "trialsim"]


def test_importing_the_analysis_pipeline_loads_no_trialsim_module():
    code = "import sys, analysis.pipeline; print(sorted(m for m in sys.modules if m.split('.')[0] == 'trialsim'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
