"""Find the skin in a photo from its colour and texture (no pretrained weights).

:func:`skin_mask` returns, per photo, the pixels that are skin: background (tiles,
walls, clothes), hair, eyes, brows, the shadow of the ear, nostrils and specular
glare are left out. The rule adapts to each photo: a broad, generic skin-colour
box (YCrCb, Chai and Ngan 1999) picks seed pixels; their robust colour and
lightness statistics then define what this photo's skin looks like, so that
white balance, exposure and skin tone need no fixed thresholds.

Pixels are classed as skin when

- their hue (CIELAB angle of a*, b*) lies within ``hue_tol_deg`` of the seed's median
  (redder by up to twice that, as inflamed lesions are skin),
- their chroma is at least ``min_chroma_frac`` of the seed's (greys: tiles, glare),
- their lightness lies within ``dark_z`` robust SDs below and ``glare_z`` above the
  seed's median (hair, brows, eyes, nostrils and shadows are dark; glare is bright),
- their local texture (SD of lightness over a small window) is below ``texture_z`` robust
  SDs above the seed's (hair and brows are striped),

after which small specks are opened away, holes smaller than ``hole_frac`` of the frame (lesions, comedones) filled, pieces
under ``min_region_frac`` of the frame dropped and a margin eroded from the edge.

A photo under a strong colour cast (warm evening light), whose skin falls outside the generic
box, takes its seed from a white-patch balanced copy (:func:`_white_patch`); the rules still
read the photo as taken.
"""

from __future__ import annotations

import numpy as np

SKIN_DEFAULTS = dict(
    hue_tol_deg=14.0,
    min_chroma_frac=0.45,
    dark_z=3.0,
    glare_z=3.0,
    texture_z=4.0,
    min_region_frac=0.02,
    hole_frac=0.004,
)


def _robust(x: np.ndarray, floor: float) -> tuple[float, float]:
    """Median and MAD-based SD (never below ``floor``)."""
    med = float(np.median(x))
    return med, max(1.4826 * float(np.median(np.abs(x - med))), floor)


def _lab(image: np.ndarray) -> np.ndarray:
    """uint8 (3, H, W) RGB → float32 (H, W, 3) CIELAB (L 0-100, a*, b* about -128..127)."""
    import cv2

    rgb = np.ascontiguousarray(image.transpose(1, 2, 0)).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)


def _seed(image: np.ndarray) -> np.ndarray:
    """Generic skin-colour box in YCrCb (Chai and Ngan 1999) with the extremes of light cut off."""
    import cv2

    rgb = np.ascontiguousarray(image.transpose(1, 2, 0))
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.int16)
    y, cr, cb = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    return (cr >= 133) & (cr <= 180) & (cb >= 77) & (cb <= 135) & (y > 40) & (y < 250)


def _white_patch(image: np.ndarray, q: float = 99.5) -> np.ndarray:
    """``image`` with each channel scaled so that its ``q``-th percentile matches the brightest channel's.

    Max-RGB colour constancy: the brightest pixels (shine, glare) carry the light's colour. A photo
    of one colour becomes grey, so this finds no skin where there is none.
    """
    f = image.reshape(3, -1).astype(np.float32)
    hi = np.maximum(np.percentile(f, q, axis=1), 1.0)
    return np.clip(f * (hi.max() / hi)[:, None], 0, 255).astype(np.uint8).reshape(image.shape)


def _texture(lightness: np.ndarray, sigma: float) -> np.ndarray:
    """Local SD of lightness (Gaussian window of SD ``sigma`` px)."""
    import cv2

    m = cv2.GaussianBlur(lightness, (0, 0), sigma)
    m2 = cv2.GaussianBlur(lightness * lightness, (0, 0), sigma)
    return np.sqrt(np.maximum(m2 - m * m, 0.0))


def _clean(mask: np.ndarray, side: int, min_region_frac: float, hole_frac: float) -> np.ndarray:
    """Open specks, fill holes under ``hole_frac`` of the frame, drop small pieces, erode a margin."""
    import cv2

    k = lambda r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))  # noqa: E731
    r = max(1, round(side / 128))
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, k(r))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, k(2 * r))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    keep = np.zeros(n, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_region_frac * mask.size
    m = keep[lab].astype(np.uint8)
    # holes the size of a lesion or a pore cluster inside the skin are skin (dark comedones, crusts)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(1 - m, connectivity=4)
    fill = np.zeros(n, dtype=bool)
    fill[1:] = stats[1:, cv2.CC_STAT_AREA] < hole_frac * mask.size
    m[fill[lab]] = 1
    return cv2.erode(m, k(r)).astype(bool)


def skin_mask(image: np.ndarray, **params) -> np.ndarray:
    """Boolean (H, W) mask of the skin of one uint8 (3, H, W) RGB photo.

    ``params`` override :data:`SKIN_DEFAULTS` (see the module docstring). An
    all-False mask means no skin was found.
    """
    p = {**SKIN_DEFAULTS, **params}
    side = max(image.shape[1:])
    lab = _lab(image)
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    seed = _seed(image)
    if seed.sum() < 0.01 * seed.size:
        # a strong colour cast (warm evening light) moves skin out of the generic box: seed from a
        # white-patch balanced copy; the rules below still read the photo as taken
        seed = _seed(_white_patch(image))
        if seed.sum() < 0.01 * seed.size:
            return np.zeros(seed.shape, dtype=bool)
    hue = np.degrees(np.arctan2(b, a))
    chroma = np.hypot(a, b)
    tex = _texture(L, max(1.0, side / 200))
    h0, _ = _robust(hue[seed], 1.0)
    c0, _ = _robust(chroma[seed], 1.0)
    l0, ls = _robust(L[seed], 2.0)
    t0, ts = _robust(tex[seed], 0.3)
    dh = hue - h0
    hue_ok = (dh <= p["hue_tol_deg"]) & (dh >= -2 * p["hue_tol_deg"])
    ok = hue_ok & (chroma >= p["min_chroma_frac"] * c0)
    ok &= (l0 - p["dark_z"] * ls <= L) & (p["glare_z"] * ls + l0 >= L)
    ok &= tex <= t0 + p["texture_z"] * ts
    mask = _clean(ok, side, p["min_region_frac"], p["hole_frac"])
    # specular glare filled as a hole is still not skin (its colour is the light's)
    return mask & ((l0 + p["glare_z"] * ls >= L) | (chroma >= p["min_chroma_frac"] * c0))


def skin_masks(images: np.ndarray, progress: bool = False, **params) -> np.ndarray:
    """Skin masks of uint8 (N, 3, H, W) photos → bool (N, H, W)."""
    it = range(len(images))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="find skin", unit="img")
    return np.stack([skin_mask(images[i], **params) for i in it]) if len(images) else np.zeros((0, 0, 0), bool)
