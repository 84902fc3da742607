"""What the reader counts, for the report: photos with its density maps laid over them, and its card."""

from __future__ import annotations

import contextlib
import json

import numpy as np

from .network import GROUPS, STRIDE

# overlay colours (RGB) per group: inflammatory red, comedones blue, marks amber
COLOURS = {"inflammatory": (230, 30, 40), "comedone": (40, 90, 230), "mark": (240, 170, 20)}


def overlay(photo: np.ndarray, maps: np.ndarray, scale: float = 0.12) -> np.ndarray:
    """uint8 (S, S, 3): ``photo`` (S, S, 3) under each group's density (groups, S/4, S/4) in its colour,
    opaque where a cell holds ``scale`` lesions or more."""
    import cv2

    out = photo.astype(np.float32)
    s = photo.shape[0]
    for g, m in zip(GROUPS, maps):
        a = np.clip(cv2.resize(m, (s, s), interpolation=cv2.INTER_LINEAR) / scale, 0, 1)[..., None] * 0.8
        out = out * (1 - a) + np.asarray(COLOURS[g], np.float32) * a
    return np.clip(out, 0, 255).round().astype(np.uint8)


def reader_views(est, images: np.ndarray, names: np.ndarray, k: int = 6) -> dict:
    """Up to ``k`` evenly spaced photos as the reader read them (``photos``), with its density maps over
    them (``overlays``), their names and the reader's severity and counts for each."""
    from .embedder import resize_photos

    pick = np.linspace(0, len(images) - 1, min(k, len(images))).round().astype(int)
    size = int(est.reader_.config["image_size"])
    small = resize_photos(images[pick], size)
    sev, maps = est.read(small)
    photos = small.transpose(0, 2, 3, 1)
    return {
        "photos": photos,
        "overlays": np.stack([overlay(p, m) for p, m in zip(photos, maps)]),
        "images": names[pick].astype(str),
        "outputs": np.column_stack([sev, maps.sum(axis=(2, 3))]),
    }


def reader_summary(est) -> dict:
    """The reader's folder, what it was trained on, its detection thresholds and held-out figures."""
    folder = est.reader_.folder
    log = {}
    # a reader folder without its log still reads photos; the report then says less
    with contextlib.suppress(OSError, ValueError):
        log = json.loads((folder / "training_log.json").read_text())
    cfg = est.reader_.config
    return {
        "folder": str(folder.resolve()),
        "trained_on": cfg.get("trained_on"),
        "groups": list(cfg["groups"]),
        "stride_px": STRIDE,
        "thresholds": cfg.get("thresholds"),
        "held_out": log.get("held_out"),
    }
