"""Skin patches at a fixed scale, with light and white balance removed.

:func:`normalize_skin` turns a photo into log contrasts against the photo's own local
skin level: per RGB channel, log(pixel) minus the log of a broad (Gaussian, SD
``sigma_frac`` of the side) average of the surrounding *skin* pixels only. Exposure,
white balance and smooth shading multiply every channel and vary slowly, so they
cancel; a lesion is smaller than the averaging window and stays (a papule is
redder and darker than the skin around it). Background and hair never enter the
average, so the edge of the face does not leak into the skin next to it.

:func:`extract_patches` cuts square patches of ``patch_frac`` of the side on a regular
grid, keeps those that are nearly all skin, and resizes them to ``patch_px`` pixels,
so a photo at any analysis size gives patches at the same scale relative to the frame.
"""

from __future__ import annotations

import numpy as np

LOG_SCALE = 0.25  # log contrast mapped to one unit of network input (lesions are ~0.05-0.3)


def normalize_skin(image: np.ndarray, mask: np.ndarray, sigma_frac: float = 1 / 32) -> np.ndarray:
    """Log contrast to the local skin level, float32 (3, H, W), 0 outside the skin.

    ``image`` uint8 (3, H, W) RGB, ``mask`` bool (H, W) skin. Values are natural-log
    ratios divided by :data:`LOG_SCALE` (0 = as the skin around it).
    """
    import cv2

    side = max(image.shape[1:])
    sigma = max(1.0, sigma_frac * side)
    w = mask.astype(np.float32)
    wb = cv2.GaussianBlur(w, (0, 0), sigma) + 1e-6
    out = np.zeros(image.shape, dtype=np.float32)
    for c in range(3):
        lg = np.log(image[c].astype(np.float32) + 1.0)
        level = cv2.GaussianBlur(lg * w, (0, 0), sigma) / wb
        out[c] = (lg - level) * w / LOG_SCALE
    return out


def patch_grid(side: int, patch_frac: float) -> tuple[int, int]:
    """Patch side and grid stride (half a patch) in pixels for a ``side``-px photo."""
    p = max(4, round(patch_frac * side))
    return p, max(1, p // 2)


def extract_patches(
    norm: np.ndarray,
    mask: np.ndarray,
    patch_frac: float = 1 / 12,
    patch_px: int = 24,
    min_skin: float = 0.9,
    max_patches: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Skin patches of one normalised photo (C, H, W), float32 (k, C, patch_px, patch_px).

    Patches of ``patch_frac`` of the side on a half-overlapping grid, kept where at
    least ``min_skin`` of their pixels are skin; at most ``max_patches`` of them
    (drawn with ``rng``; all of them when None). ``k`` may be 0 (no skin).
    """
    import cv2

    side = norm.shape[1]
    p, stride = patch_grid(side, patch_frac)
    cover = cv2.boxFilter(mask.astype(np.float32), -1, (p, p), normalize=True, anchor=(0, 0))
    ys, xs = np.meshgrid(np.arange(0, norm.shape[1] - p + 1, stride), np.arange(0, norm.shape[2] - p + 1, stride))
    ys, xs = ys.ravel(), xs.ravel()
    ok = cover[ys, xs] >= min_skin
    ys, xs = ys[ok], xs[ok]
    if max_patches is not None and len(ys) > max_patches:
        rng = rng if rng is not None else np.random.default_rng(0)
        pick = np.sort(rng.choice(len(ys), max_patches, replace=False))
        ys, xs = ys[pick], xs[pick]
    out = np.empty((len(ys), norm.shape[0], patch_px, patch_px), dtype=np.float32)
    hwc = np.ascontiguousarray(norm.transpose(1, 2, 0))
    for i, (y, x) in enumerate(zip(ys, xs)):
        crop = hwc[y : y + p, x : x + p]
        if p != patch_px:
            crop = cv2.resize(crop, (patch_px, patch_px), interpolation=cv2.INTER_AREA)
        out[i] = crop.transpose(2, 0, 1)
    return out
