"""Reading a photo folder for the realism test: ``manifest.csv`` with ``image`` and ``patient_id``.

Only those two columns are required (a severity column is checked where asked for), so any
folder of trial photos can be compared with a simulation, not only full trial datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..contract import MANIFEST
from ..errors import AnalysisInputError

REQUIRED = ("image", "patient_id")


@dataclass
class PhotoFolder:
    """One side of the comparison: its manifest (rows in photo order) and photos."""

    root: Path
    manifest: pd.DataFrame
    images: np.ndarray  # uint8 (N, H, W, 3) RGB, short side resized, centre crop

    @property
    def groups(self) -> np.ndarray:
        return self.manifest["patient_id"].to_numpy()


def read_manifest(folder: str | Path, severity: str | None = None) -> pd.DataFrame:
    """The folder's manifest with ``image`` and ``patient_id`` (and ``severity``, when named) checked."""
    root = Path(folder)
    if not root.is_dir():
        raise AnalysisInputError("photo folder not found", file=str(root))
    path = root / MANIFEST
    if not path.is_file():
        raise AnalysisInputError("manifest.csv is missing", file=str(path), allowed="a CSV with image, patient_id")
    try:
        df = pd.read_csv(path, dtype={"patient_id": str, "image": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise AnalysisInputError(f"unreadable CSV ({e.__class__.__name__})", file=str(path)) from None
    need = list(REQUIRED) + ([severity] if severity else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise AnalysisInputError(f"missing column(s) {missing}", file=str(path), field=missing[0])
    df = df.dropna(subset=list(REQUIRED)).reset_index(drop=True)
    if severity:
        sev = pd.to_numeric(df[severity], errors="coerce")
        if sev.isna().any():
            row = int(np.flatnonzero(sev.isna())[0]) + 2
            raise AnalysisInputError(f"non-numeric value in row {row}", file=str(path), field=severity)
        df[severity] = sev
    n_pat = df["patient_id"].nunique()
    if n_pat < 2:
        raise AnalysisInputError(
            f"need photos of at least two patients (folds are split by patient), found {n_pat}",
            file=str(path),
            field="patient_id",
        )
    return df


def _open(path: Path, size: int) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        rgb = ImageOps.exif_transpose(im).convert("RGB")
        w, h = rgb.size
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        rgb = rgb.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        return np.asarray(rgb.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_folder(
    folder: str | Path, size: int = 256, severity: str | None = None, progress: bool = False
) -> PhotoFolder:
    """Read the manifest and decode every photo to ``size`` × ``size`` px (short side, centre crop).

    A missing or unreadable photo is bad input naming the file.
    """
    from PIL import UnidentifiedImageError

    root = Path(folder)
    df = read_manifest(root, severity)
    out = np.zeros((len(df), size, size, 3), np.uint8)
    it = enumerate(df["image"])
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(df), desc=f"load {root.name}", unit="img")
    for i, rel in it:
        path = root / rel
        try:
            out[i] = _open(path, size)
        except FileNotFoundError:
            raise AnalysisInputError("image file not found", file=str(path), field="image") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise AnalysisInputError(
                f"unreadable image ({e.__class__.__name__})", file=str(path), field="image"
            ) from None
    return PhotoFolder(root, df, out)
