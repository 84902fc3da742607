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
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    On any failure (a full disk, a signal) the temporary file is removed and ``path`` keeps what it
    held before; an :class:`OSError` then names ``path`` (the write itself reports no file name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; output files are for sharing
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def atomic_write_npz(path: Path | str, arrays: dict) -> None:
    """``arrays`` (name → numpy array) as a compressed ``.npz`` at ``path``, atomically."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(path: Path | str, df: pd.DataFrame, index: bool = False, float_format: str = "%.6g") -> None:
    """Write a table as CSV atomically, with ``\\n`` line ends and floats as ``float_format`` (6 significant
    digits unless told; a table that is read back and computed on wants more)."""
    atomic_write_text(path, df.to_csv(index=index, lineterminator="\n", float_format=float_format))
