"""Writing files so that a reader never sees half of one: a temporary name in the same folder, then a rename.

The one definition of atomic writes in the project; ``trialsim`` imports it from here (``analysis`` never
imports ``trialsim``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pandas as pd


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; output files are for sharing
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(path: Path | str, df: pd.DataFrame, index: bool = False) -> None:
    """Write a table as CSV atomically, with ``\\n`` line ends and 6 significant digits for floats."""
    atomic_write_text(path, df.to_csv(index=index, lineterminator="\n", float_format="%.6g"))
