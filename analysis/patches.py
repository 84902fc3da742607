"""Skin patches at a fixed scale relative to the frame.

:func:`extract_patches` resamples a (normalised) photo so that ``patch_frac`` of its side
is ``patch_px`` pixels and cuts square patches on a half-overlapping grid, keeping those
that are nearly all skin. A photo at any analysis size, and a close-up as well as a
photo of the side of the face, gives patches of the same size in pixels.
"""

from __future__ import annotations

import numpy as np


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

    The photo is resampled so that ``patch_frac`` of its side is ``patch_px`` pixels;
    patches are cut on a half-overlapping grid and kept where at least ``min_skin`` of
    their pixels are skin; at most ``max_patches`` of them (drawn with ``rng``; all of
    them when None). ``k`` may be 0 (no skin).
    """
    import cv2
    from numpy.lib.stride_tricks import sliding_window_view

    side = max(norm.shape[1:])
    scale = patch_px / max(1.0, patch_frac * side)
    h, w = max(patch_px, round(norm.shape[1] * scale)), max(patch_px, round(norm.shape[2] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    hwc = np.ascontiguousarray(norm.transpose(1, 2, 0))
    img = cv2.resize(hwc, (w, h), interpolation=interp).reshape(h, w, -1)
    cover = cv2.resize(mask.astype(np.float32), (w, h), interpolation=interp)
    stride = max(1, patch_px // 2)
    share = sliding_window_view(cover, (patch_px, patch_px))[::stride, ::stride].mean(axis=(-1, -2))
    iy, ix = np.nonzero(share >= min_skin)
    if max_patches is not None and len(iy) > max_patches:
        rng = rng if rng is not None else np.random.default_rng(0)
        pick = np.sort(rng.choice(len(iy), max_patches, replace=False))
        iy, ix = iy[pick], ix[pick]
    windows = sliding_window_view(img, (patch_px, patch_px), axis=(0, 1))[::stride, ::stride]
    return np.ascontiguousarray(windows[iy, ix], dtype=np.float32)
