"""Fixed image statistics that tell photos apart: colour, tone, local contrast, spectrum, spots.

Each photo (uint8 H×W×3 RGB, any square size; computed at 256 px) becomes one row of
:data:`FEATURES`. They are chosen to cover what makes a simulated photo look simulated:
colour and its spread (CIELAB), highlights and shadows, fine texture at several scales
(pores, skin lines), the slope of the power spectrum (how detail falls off with scale),
edges, saturation and red spots (count, contrast, size) as a lesion detector sees them.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

FEATURES = (
    "L_mean", "L_sd", "L_p05", "L_p95", "a_mean", "a_sd", "b_mean", "b_sd",
    "sat_mean", "highlight_frac", "shadow_frac",
    "hp1_sd", "hp3_sd", "hp8_sd", "grad_mean", "edge_frac", "spectrum_slope", "spectrum_hf",
    "spot_count", "spot_contrast", "spot_area", "a_hp_sd", "a_skew",
)  # fmt: skip
SIZE = 256


def _spectrum(L: np.ndarray) -> tuple[float, float]:
    """Slope of log radial power against log frequency (mid band) and the high-band share."""
    n = L.shape[0]
    win = np.outer(np.hanning(n), np.hanning(n)).astype(np.float32)
    p = np.abs(np.fft.fftshift(np.fft.fft2((L - L.mean()) * win))) ** 2
    yy, xx = np.indices(p.shape)
    r = np.hypot(yy - n // 2, xx - n // 2).astype(int)
    radial = np.bincount(r.ravel(), p.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    f = np.arange(4, n // 2)
    slope = float(np.polyfit(np.log(f), np.log(radial[f] + 1e-9), 1)[0])
    hf = float(radial[n // 4 : n // 2].sum() / (radial[2 : n // 2].sum() + 1e-9))
    return slope, np.log10(hf + 1e-12)


def _spot_stats(a: np.ndarray) -> tuple[float, float, float]:
    """Red spots as :func:`analysis.reduce.spots` finds them: count, mean a* contrast, mean area (px)."""
    a = cv2.GaussianBlur(a, (0, 0), 0.8)
    d = a - cv2.GaussianBlur(a, (0, 0), 12, borderType=cv2.BORDER_REFLECT)
    mask = (d > 4.0).astype(np.uint8)
    _k, lab, st, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = st[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= 3) + 1
    if not len(keep):
        return 0.0, 0.0, 0.0
    contrast = float(np.mean([d[lab == j].max() for j in keep[:200]]))
    return float(len(keep)), contrast, float(np.log(areas[keep - 1].mean()))


def image_features(rgb: np.ndarray) -> dict[str, float]:
    """The statistics of one photo (uint8 H×W×3 RGB) as a dict over :data:`FEATURES`."""
    if rgb.shape[0] != SIZE:
        rgb = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    L, a, b = lab[..., 0] * (100 / 255), lab[..., 1] - 128, lab[..., 2] - 128
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    f = {
        "L_mean": L.mean(), "L_sd": L.std(), "L_p05": np.percentile(L, 5), "L_p95": np.percentile(L, 95),
        "a_mean": a.mean(), "a_sd": a.std(), "b_mean": b.mean(), "b_sd": b.std(),
        "sat_mean": hsv[..., 1].mean() / 255, "highlight_frac": (L > 90).mean(), "shadow_frac": (L < 20).mean(),
    }  # fmt: skip
    for s in (1, 3, 8):
        f[f"hp{s}_sd"] = float((L - cv2.GaussianBlur(L, (0, 0), s)).std())
    gx, gy = cv2.Sobel(L, cv2.CV_32F, 1, 0), cv2.Sobel(L, cv2.CV_32F, 0, 1)
    f["grad_mean"] = float(np.hypot(gx, gy).mean())
    f["edge_frac"] = float((cv2.Canny(np.clip(L * 2.55, 0, 255).astype(np.uint8), 40, 100) > 0).mean())
    f["spectrum_slope"], f["spectrum_hf"] = _spectrum(L)
    f["spot_count"], f["spot_contrast"], f["spot_area"] = _spot_stats(a)
    ahp = a - cv2.GaussianBlur(a, (0, 0), 6)
    f["a_hp_sd"] = float(ahp.std())
    f["a_skew"] = float(((ahp - ahp.mean()) ** 3).mean() / (ahp.std() ** 3 + 1e-6))
    return {k: float(f[k]) for k in FEATURES}


def feature_table(images: np.ndarray) -> pd.DataFrame:
    """:func:`image_features` of every photo in ``images`` (uint8 N×H×W×3), one row each."""
    return pd.DataFrame([image_features(im) for im in images], columns=list(FEATURES))
