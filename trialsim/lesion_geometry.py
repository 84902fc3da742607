"""Where lesions may sit and where a new one is placed, in each view's normalised frame.

Positions are normalised (``x`` as a fraction of the frame width, ``y`` of the height) and
radii are fractions of the frame height; :func:`to_pixels` maps them onto a renderer's
canonical frame (:func:`canonical_size`). The face view's features (:data:`FACE`) are
shared with the face renderer, so lesions never sit on the eyes, brows, nose or lips.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .views import side_allowed

# Face view, in height units (v down from the top in [0, 1], u across, centre at half
# the frame width). Each feature is (u offset from centre, v, semi-axis u, semi-axis v).
FACE: dict[str, Any] = {
    "face": (0.0, 0.53, 0.30, 0.40),
    "eyes": [(-0.115, 0.45, 0.060, 0.026), (0.115, 0.45, 0.060, 0.026)],
    "brows": [(-0.115, 0.395, 0.072, 0.016), (0.115, 0.395, 0.072, 0.016)],
    "nose": (0.0, 0.555, 0.045, 0.085),
    "lips": (0.0, 0.715, 0.085, 0.028),
    "hairline_v": 0.22,
}
# lesion-free margins around the features (eye and brow merged into one eye region)
_FACE_EXCLUDE = [
    (-0.115, 0.425, 0.095, 0.070),
    (0.115, 0.425, 0.095, 0.070),
    (0.0, 0.545, 0.060, 0.110),
    (0.0, 0.715, 0.105, 0.048),
]


def _in_ellipse(u, v, e, cu) -> np.ndarray:
    du, dv, au, av = e
    return ((u - (cu + du)) / au) ** 2 + ((v - dv) / av) ** 2 <= 1.0


def allowed_region(x, y, view: str, aspect: float) -> np.ndarray:
    """True where a lesion may sit; ``x``, ``y`` normalised, ``aspect`` = height / width."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if view == "cheek":
        m = 0.03
        return (x > m) & (x < 1 - m) & (y > m) & (y < 1 - m)
    if view == "side":
        return side_allowed(x, y)
    cu = 0.5 / aspect
    u, v = x / aspect, y
    face = FACE["face"]
    ok = _in_ellipse(u, v, (face[0], face[1], face[2] * 0.92, face[3] * 0.94), cu) & (v > FACE["hairline_v"] + 0.03)
    for e in _FACE_EXCLUDE:
        ok &= ~_in_ellipse(u, v, e, cu)
    return ok


def feature_mask(x, y, aspect: float, features=("eyes", "brows", "lips")) -> np.ndarray:
    """True where a face-view point lies on one of ``features`` (their drawn ellipses)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    cu, u = 0.5 / aspect, x / aspect
    hit = np.zeros(np.broadcast(x, y).shape, bool)
    for f in features:
        es = FACE[f] if isinstance(FACE[f], list) else [FACE[f]]
        for e in es:
            hit |= _in_ellipse(u, y, e, cu)
    return hit


def sample_positions(
    rng: np.random.Generator,
    n: int,
    view: str,
    aspect: float,
    hotspots: np.ndarray,
    occupied: np.ndarray | list[tuple[float, float, float]],
    radius: float,
) -> tuple[float, float]:
    """One free position (normalised x, y) for a lesion of ``radius`` (height units).

    Half the births fall near the patient's ``hotspots`` (acne clusters), the rest
    anywhere allowed; candidates closer than the two radii (plus a gap) to an
    ``occupied`` lesion (x, y, radius: rows of an array, or tuples) are rejected. ``n``
    candidates are drawn at once (a fixed number, so the stream of draws does not depend
    on the outcome).
    """
    near = rng.random(n) < 0.5
    which = rng.integers(0, len(hotspots), n)
    cand = np.where(near[:, None], hotspots[which] + rng.normal(0, 0.13, (n, 2)), rng.random((n, 2)))
    if view == "cheek":  # allowed_region's cheek test on both columns at once (the same comparisons)
        allowed = ((cand > 0.03) & (cand < 1 - 0.03)).all(axis=1)
    else:
        allowed = allowed_region(cand[:, 0], cand[:, 1], view, aspect)
    ok = allowed
    if len(occupied):
        occ = np.asarray(occupied)
        du = cand[:, 0, None] - occ[:, 0]
        if aspect != 1.0:  # dividing by 1.0 changes no bit
            du = du / aspect
        dv = cand[:, 1, None] - occ[:, 1]
        gap = 1.15 * (radius + occ[:, 2]) + 0.004
        d2 = du**2 + dv**2
        ok = allowed & (d2 >= gap**2).all(axis=1)
    idx = np.flatnonzero(ok)
    if len(idx):
        return float(cand[idx[0], 0]), float(cand[idx[0], 1])
    # crowded skin: accept the allowed candidate farthest from its neighbours
    kept = np.flatnonzero(allowed)
    if not len(kept):
        if view == "side":
            return 0.7, 0.55
        return 0.5, 0.5 if view == "cheek" else FACE["face"][1] + 0.15
    if not len(occupied):
        return float(cand[kept[0], 0]), float(cand[kept[0], 1])
    d = d2.min(axis=1)[kept]
    j = kept[int(np.argmax(d))]
    return float(cand[j, 0]), float(cand[j, 1])


def _hotspots(rng: np.random.Generator, view: str, aspect: float) -> np.ndarray:
    pts: list[np.ndarray] = []
    while len(pts) < 3:
        p = rng.random(2)
        if allowed_region(p[0], p[1], view, aspect):
            pts.append(p)
    return np.array(pts)


def canonical_size(image_size: int, aspect: float) -> tuple[int, int]:
    """(height, width) of the canonical frame: height = image_size, width = round(height / aspect)."""
    return int(image_size), int(round(image_size / aspect))


def to_pixels(population: pd.DataFrame, height: int, width: int) -> pd.DataFrame:
    """Normalised positions and radii → pixels of a ``height`` × ``width`` frame (new columns x, y, radius)."""
    out = population.copy()
    out["x"] = population["x"] * width
    out["y"] = population["y"] * height
    out["radius"] = population["radius"] * height
    return out
