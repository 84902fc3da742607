"""Reading the training photos: which photo shows which grade, and each photo as a training tensor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.errors import cell_text

from ..errors import BadInput

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class TrainingPhoto:
    """One photo cropped for training: ``pixels`` (3 × size × size, float32 in [-1, 1]) and SDXL's
    size conditioning (``original_size`` and ``crop_top_left`` as (height, width) / (top, left) in px)."""

    path: Path
    pixels: np.ndarray
    original_size: tuple[int, int]
    crop_top_left: tuple[int, int]


def _grade_of_folder(name: str) -> int | None:
    text = name.lower().removeprefix("acne").removeprefix("grade").strip("_- ")
    return int(text) if text.isdigit() else None


def _from_manifest(folder: Path, grade_column: str) -> dict[int, list[Path]]:
    import pandas as pd

    file = folder / MANIFEST
    try:
        table = pd.read_csv(file)
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot read the table ({err.__class__.__name__}: {err})", file=str(file)) from None
    for column in ("image", grade_column):
        if column not in table.columns:
            raise BadInput(
                f"no column {column!r} (columns: {list(table.columns)})",
                file=str(file),
                field=column,
                allowed="columns image (a path relative to the folder) and the grade column (--grade-column)",
            )
    grades = pd.to_numeric(table[grade_column], errors="coerce")
    bad = table.index[grades.isna() | (grades % 1 != 0)]
    if len(bad):
        raise BadInput(
            f"row {int(bad[0]) + 2} has grade {cell_text(table[grade_column].loc[bad[0]])}",
            file=str(file),
            field=grade_column,
            allowed="integer ACNE04 grades 0-3",
        )
    out: dict[int, list[Path]] = {}
    for image, grade in zip(table["image"].astype(str), grades.astype(int)):
        out.setdefault(int(grade), []).append(folder / image)
    return out


def _from_subfolders(folder: Path) -> dict[int, list[Path]]:
    out: dict[int, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        grade = _grade_of_folder(sub.name)
        if grade is not None:
            files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            out.setdefault(grade, []).extend(files)
    return out


def find_photos(folder: str | Path, grades: list[int], grade_column: str = "grade") -> dict[int, list[Path]]:
    """``{grade: [photo paths]}`` for each of ``grades``, from ``manifest.csv`` or from one sub-folder per grade.

    Raises :class:`BadInput` naming the folder or file when a grade has no photo or a listed photo
    is missing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"no folder at {folder.resolve()}", field="PHOTOS", allowed="a folder of graded photos")
    by_grade = _from_manifest(folder, grade_column) if (folder / MANIFEST).is_file() else _from_subfolders(folder)
    source = str(folder / MANIFEST) if (folder / MANIFEST).is_file() else str(folder)
    for grade in grades:
        if not by_grade.get(grade):
            raise BadInput(
                f"grade {grade} has no photos (found photos for grades {sorted(by_grade) or 'none'})",
                file=source,
                field=grade_column if source.endswith(MANIFEST) else "PHOTOS",
                allowed=f"photos for every grade in --grades, listed in {MANIFEST} or in sub-folders "
                "named 0-3 or acne0-acne3",
            )
        missing = [p for p in by_grade[grade] if not p.is_file()]
        if missing:
            raise BadInput(f"photo {missing[0]} does not exist", file=source, field="image")
    return {g: by_grade[g] for g in grades}


def load_photo(path: Path, size: int) -> TrainingPhoto:
    """``path`` resized on its short side to ``size`` px and centre-cropped to ``size`` × ``size``."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            im = ImageOps.exif_transpose(opened).convert("RGB")
    except Exception as err:  # PIL raises many kinds for a truncated or foreign file
        raise BadInput(
            f"unreadable photo ({err.__class__.__name__}: {str(err)[:200]})", file=str(path), field="image"
        ) from None
    original = (im.height, im.width)
    scale = size / min(im.size)
    w, h = max(size, round(im.width * scale)), max(size, round(im.height * scale))
    im = im.resize((w, h), Image.Resampling.BILINEAR)
    top, left = (h - size) // 2, (w - size) // 2
    im = im.crop((left, top, left + size, top + size))
    pixels = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    return TrainingPhoto(path, np.ascontiguousarray(pixels), original, (top, left))
