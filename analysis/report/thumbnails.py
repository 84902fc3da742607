"""Photo thumbnails for the report: JPEG data URIs of the dataset's photos and of the autoencoder's arrays."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from .inputs import ReportInputs, natural_key

THUMB_PX = 64  # filmstrip thumbnail side (px)
THUMB_QUALITY = 72  # JPEG quality of thumbnails
FILMSTRIP_MAX_PER_PATIENT = 16
FILMSTRIP_MAX_TOTAL = 480  # keeps a many-patient report small


def _jpeg_uri(im, quality: int = THUMB_QUALITY) -> str:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(path: Path, px: int = THUMB_PX) -> str | None:
    """A square centre-cropped JPEG data URI of the photo at ``path`` (``None`` if unreadable)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (px * 2, px * 2))  # JPEG: decode at a reduced scale, much faster for big photos
            rgb = ImageOps.exif_transpose(im).convert("RGB")
            return _jpeg_uri(ImageOps.fit(rgb, (px, px), Image.Resampling.LANCZOS))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def array_uri(a: np.ndarray, px: int = 96) -> str:
    from PIL import Image

    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = np.clip(a * (255 if a.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    im = Image.fromarray(a.squeeze()).convert("RGB")
    return _jpeg_uri(im.resize((px, px), Image.Resampling.LANCZOS), quality=82)


def filmstrip(inputs: ReportInputs, colors: dict[str, str]) -> tuple[list[dict], str | None]:
    """Per patient: thumbnails of evenly spaced days, each under its treatment's colour."""
    man, root = inputs.manifest, inputs.dataset_root
    if man is None or root is None or not {"image", "patient_id", "day", "treatment"} <= set(man.columns):
        return [], None
    man = man.dropna(subset=["image", "patient_id", "day"])
    man = man[~man["image"].astype(str).isin(inputs.results.skipped_image_paths)]  # photos the analysis could not use
    patients = sorted(man["patient_id"].astype(str).unique(), key=natural_key)
    per = max(4, min(FILMSTRIP_MAX_PER_PATIENT, FILMSTRIP_MAX_TOTAL // max(1, len(patients))))
    shown = patients[: max(1, FILMSTRIP_MAX_TOTAL // per)]
    strips, missing = [], 0
    for pid in shown:
        d = man[man["patient_id"].astype(str) == pid].sort_values(["day", "image"], kind="stable")
        d = d.drop_duplicates("day")  # first photo of each day
        pick = np.unique(np.linspace(0, len(d) - 1, min(per, len(d))).round().astype(int))
        cells = []
        for _, r in d.iloc[pick].iterrows():
            uri = thumbnail(root / str(r["image"]))
            missing += uri is None
            cells.append(
                {
                    "uri": uri,
                    "day": int(r["day"]),
                    "treatment": str(r["treatment"]),
                    "color": colors.get(str(r["treatment"]), "#999999"),
                }
            )
        strips.append({"patient_id": pid, "cells": cells})
    if strips and all(c["uri"] is None for s in strips for c in s["cells"]):
        return [], "None of the photos listed in manifest.csv could be read from the dataset folder."
    note = []
    if len(shown) < len(patients):
        note.append(f"the first {len(shown)} of {len(patients)} patients are shown")
    if missing:
        note.append(f"{missing} photo(s) could not be read and are shown blank")
    return strips, ("; ".join(note).capitalize() + ".") if note else None
