"""Contact sheets: one PNG per patient with thumbnails across the trial.

Each thumbnail is labelled with the study day, the treatment and the latent
severity (and its grade), so a reader sees at a glance whether the lesions follow
the schedule. The sheet is built from the image files as written, so it shows
exactly what an analysis will read, and is the same on a resumed run.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from analysis.atomic import atomic_write_bytes

from ..dataset import CONTACT_DIR, safe_name
from .base import PatientJob

THUMB_HEIGHT = 128
MAX_THUMBS = 16
COLUMNS = 8
_BG = (245, 245, 245)


def _text(img, text, org, scale=0.36, colour=(20, 20, 20), thick=1):
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def label_tile(pixels_bgr: np.ndarray, lines: list[str], height: int = THUMB_HEIGHT) -> np.ndarray:
    """A thumbnail of ``height`` px with text lines underneath (BGR uint8)."""
    h, w = pixels_bgr.shape[:2]
    tw = max(1, int(round(w * height / h)))
    thumb = cv2.resize(pixels_bgr, (tw, height), interpolation=cv2.INTER_AREA)
    lab_h = 6 + 13 * len(lines)
    tile = np.full((height + lab_h, max(tw, 100), 3), _BG, np.uint8)
    tile[:height, :tw] = thumb
    for i, line in enumerate(lines):
        _text(tile, line, (3, height + 13 + 13 * i))
    return tile


def grid(tiles: list[np.ndarray], columns: int, gap: int = 4, title: str | None = None) -> np.ndarray:
    """Tiles (BGR, any sizes) laid out row by row on a light background."""
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    top = 26 if title else 0
    sheet = np.full((top + rows * (th + gap) + gap, columns * (tw + gap) + gap, 3), _BG, np.uint8)
    if title:
        _text(sheet, title, (gap + 2, 18), scale=0.5, thick=1)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = top + gap + r * (th + gap), gap + c * (tw + gap)
        sheet[y : y + t.shape[0], x : x + t.shape[1]] = t
    return sheet


def contact_sheet(job: PatientJob, folder: Path) -> np.ndarray | None:
    """The sheet (BGR uint8) for ``job``'s images already written under ``folder``."""
    folder = Path(folder)
    imgs = job.images.drop_duplicates("day")
    if not len(imgs):
        return None
    pick = np.unique(np.linspace(0, len(imgs) - 1, min(MAX_THUMBS, len(imgs))).round().astype(int))
    days = job.days.set_index("day")
    tiles = []
    for row in imgs.iloc[pick].itertuples(index=False):
        px = cv2.imread(str(folder / row.image), cv2.IMREAD_COLOR)
        if px is None:
            continue
        d = days.loc[row.day]
        tiles.append(
            label_tile(
                px,
                [
                    f"day {int(row.day)}  {d['treatment']}",
                    f"sev {float(d['severity_latent']):.2f} (g{int(d['severity_grade'])})",
                ],
            )
        )
    if not tiles:
        return None
    return grid(tiles, min(COLUMNS, len(tiles)), title=f"patient {job.patient_id}")


def write_contact_sheet(job: PatientJob, folder: Path) -> Path | None:
    """Write ``folder/contact_sheets/<patient>.png`` atomically; returns its path."""
    sheet = contact_sheet(job, folder)
    if sheet is None:
        return None
    _ok, buf = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    name = safe_name(job.patient_id)
    path = Path(folder) / CONTACT_DIR / f"{name}.png"
    atomic_write_bytes(path, buf.tobytes())
    return path
